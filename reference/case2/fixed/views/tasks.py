"""Tasks of the authenticated user: list, create, read, image, delete."""
from __future__ import annotations

from flask import Blueprint, current_app, g, request, send_from_directory, url_for
from peewee import IntegrityError
from werkzeug.exceptions import NotFound, Unauthorized, UnsupportedMediaType
from werkzeug.http import parse_range_header

from .. import validation
from ..errors import InvalidField
from ..images import inspect_image
from ..prepared import Prepared
from ..models import Task, count_created_task, db
from ..reconcile import placement_lock
from . import (AFTER, IMAGE_EXT, IMAGE_TYPE, LIMIT, META, USER, config, image_storage, own_task,
               remove_images, task_json, tasks_with_state)

bp = Blueprint("tasks", __name__)

FOREIGN_KEY_VIOLATION = "23503"

# A page of the caller's tasks after ``after`` (one more than asked: is there a next page?).
PAGE = Prepared(tasks_with_state().where((Task.owner == USER) & (Task.id > AFTER))
                .order_by(Task.id).limit(LIMIT),
                Task, user=USER, after=AFTER, limit=LIMIT)
# The new row, and the lock that keeps the reconciler off its file until COMMIT.
INSERT = Prepared(Task.insert(owner=USER, metadata=META, image_type=IMAGE_TYPE,
                              image_ext=IMAGE_EXT).returning(Task, placement_lock(Task.id)),
                  Task, user=USER, meta=META, image_type=IMAGE_TYPE, image_ext=IMAGE_EXT)


def _task_input() -> tuple[str, bytes]:
    """(meta, image bytes) from a JSON body ``{"meta", "image": base64}`` or from a
    ``multipart/form-data`` body with the parts ``meta`` (UTF-8 text) and ``image`` (a file)."""
    limit = config().max_content_length
    if request.mimetype == "multipart/form-data":
        parts = validation.multipart_parts(request, limit)
        for name in ("meta", "image"):
            if name not in parts:
                raise InvalidField(name, f"the multipart body has no {name} part")
        if not parts["image"]:
            raise InvalidField("image", "image is empty")
        return validation.meta(validation.utf8(parts["meta"], "meta")), parts["image"]
    if not request.is_json:
        raise UnsupportedMediaType("send application/json or multipart/form-data")
    body = validation.json_object(request, limit)
    return validation.meta(body.get("meta")), validation.base64_bytes(body.get("image"), "image")


def _insert(meta: str, kind) -> dict:
    try:
        return INSERT.run(db, user=g.user.id, meta=meta, image_type=kind.mime,
                          image_ext=kind.ext)[0]
    except IntegrityError as exc:
        if getattr(getattr(exc, "orig", None), "pgcode", None) == FOREIGN_KEY_VIOLATION:
            # The user was deleted after this request authenticated it.
            raise Unauthorized("the user no longer exists") from None
        raise


@bp.get("/tasks")
def list_tasks():
    after, limit = validation.page(request.args)
    rows = PAGE.run(db, user=g.user.id, after=after, limit=limit + 1)
    items = rows[:limit]
    return {"items": [task_json(t) for t in items],
            "next": items[-1]["id"] if len(rows) > limit else None}


@bp.post("/tasks")
def create_task():
    meta, data = _task_input()
    kind = inspect_image(data, config().max_image_pixels)
    storage = image_storage()
    with storage.staged(data) as staged:  # file I/O (and a full disk) before the transaction
        placed = committing = False
        try:
            with db.atomic():
                # The row, and the placement lock: the reconciler leaves the file of a
                # transaction in flight alone.
                task = _insert(meta, kind)
                storage.place(staged, task["id"], kind.ext)
                placed = True
                count_created_task(g.user.id)
                committing = True  # only COMMIT is left
        except BaseException:
            # Rolled back: no row, so no file. If COMMIT itself failed, whether it took effect
            # is unknown: keep the file, and have it decided by the row as soon as the
            # database can say (reconcile.PendingFiles).
            if placed and not committing:
                storage.remove([(task["id"], kind.ext)])
            elif committing:
                current_app.extensions["pending_files"].add(task["id"], kind.ext)
            raise
    location = url_for("tasks.get_task", task_id=task["id"])
    return task_json(task, "free"), 201, {"Location": location}


@bp.get("/tasks/<id:task_id>")
def get_task(task_id: int):
    return task_json(own_task(task_id))


def _ignore_unservable_range(environ: dict) -> None:
    """Leave only a single byte range for Werkzeug (206, or 416 when it lies outside the
    image). RFC 9110, section 14.2: a Range of an unknown unit MUST be ignored, a malformed one
    MAY be; several ranges would need multipart/byteranges, which this service does not send,
    and may be ignored too. Werkzeug answers all three with 416."""
    parsed = parse_range_header(environ.get("HTTP_RANGE"))
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        environ.pop("HTTP_RANGE", None)


@bp.get("/tasks/<id:task_id>/image")
def get_task_image(task_id: int):
    task = own_task(task_id)
    if not task["image_ext"]:
        raise NotFound("task has no image")
    storage = image_storage()
    name = storage.name(task["id"], task["image_ext"])
    _ignore_unservable_range(request.environ)
    try:
        response = send_from_directory(storage.root, name, mimetype=task["image_type"])
    except FileNotFoundError:
        # A DELETE committed and removed the file after the row above was read (between
        # Werkzeug's isfile check and its open): the task is gone, as for any deleted task.
        raise NotFound("no such task") from None
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Never rendered as a document, whatever a client makes of the bytes.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Content-Disposition"] = f'inline; filename="{name}"'
    response.headers["Cache-Control"] = "private, no-cache"  # C2-50: the owner's, revalidated on reuse
    return response


@bp.delete("/tasks/<id:task_id>")
def delete_task(task_id: int):
    deleted = list(Task.delete().where((Task.id == task_id) & (Task.owner == g.user.id))
                   .returning(Task.id, Task.image_ext).tuples().execute())  # one statement
    if not deleted:
        raise NotFound("no such task")
    remove_images(deleted)  # after COMMIT; a missing file is fine
    return "", 204
