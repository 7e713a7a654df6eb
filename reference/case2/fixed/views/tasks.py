"""Tasks of the authenticated user: list, create, read, image, delete, claim."""
from __future__ import annotations

from flask import Blueprint, g, request, send_from_directory, url_for
from werkzeug.exceptions import NotFound

from .. import validation
from ..errors import InvalidField
from ..models import Task, count_created_task, db
from ..storage import detect_image
from . import image_storage

bp = Blueprint("tasks", __name__)


def task_json(task: Task) -> dict:
    return {"id": task.id, "free": task.free, "meta": task.metadata, "owner_id": task.owner_id,
            "image_type": task.image_type}


def own_task(task_id: int) -> Task:
    """The caller's task; 404 for unknown ids and for other users' tasks alike."""
    task = Task.get_or_none((Task.id == task_id) & (Task.owner == g.user.id))
    if task is None:
        raise NotFound("no such task")
    return task


def _task_input() -> tuple[str, bytes]:
    """(meta, image bytes) from a JSON body ``{"meta", "image": base64}`` or from a raw image
    body (``Content-Type: image/*``) with ``?meta=``."""
    if request.mimetype.startswith("image/"):
        return validation.meta(request.args.get("meta")), request.get_data(cache=False)
    body = validation.json_object(request)
    return validation.meta(body.get("meta")), validation.base64_bytes(body.get("image"), "image")


@bp.get("/tasks")
def list_tasks():
    after, limit = validation.page(request.args)
    rows = list(Task.select().where((Task.owner == g.user.id) & (Task.id > after))
                .order_by(Task.id).limit(limit + 1))
    items = rows[:limit]
    return {"items": [task_json(t) for t in items],
            "next": items[-1].id if len(rows) > limit else None}


@bp.post("/tasks")
def create_task():
    meta, data = _task_input()
    kind = detect_image(data)
    if kind is None:
        raise InvalidField("image", "image is not in a recognised image format")
    storage = image_storage()
    with storage.staged(data) as staged:  # file I/O before the transaction starts
        placed = None
        try:
            with db.atomic():
                task = Task.create(owner=g.user.id, metadata=meta,
                                   image_type=kind.mime, image_ext=kind.ext)
                placed = storage.place(staged, task.id, kind.ext)
                count_created_task(g.user.id)
        except BaseException:
            if placed is not None:  # the transaction did not commit: no row, so no file
                storage.remove([(task.id, kind.ext)])
            raise
    return task_json(task), 201, {"Location": url_for("tasks.get_task", task_id=task.id)}


@bp.get("/tasks/<int:task_id>")
def get_task(task_id: int):
    return task_json(own_task(task_id))


@bp.get("/tasks/<int:task_id>/image")
def get_task_image(task_id: int):
    task = own_task(task_id)
    if not task.image_ext:
        raise NotFound("task has no image")
    storage = image_storage()
    response = send_from_directory(storage.root, storage.name(task.id, task.image_ext),
                                   mimetype=task.image_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-cache"  # C2-50: the owner's, revalidated on reuse
    return response


@bp.delete("/tasks/<int:task_id>")
def delete_task(task_id: int):
    with db.atomic():
        deleted = list(Task.delete().where((Task.id == task_id) & (Task.owner == g.user.id))
                       .returning(Task.id, Task.image_ext).tuples().execute())
    if not deleted:
        raise NotFound("no such task")
    image_storage().remove(deleted)  # after COMMIT; a missing file is fine
    return "", 204


@bp.post("/take_free_task")
def take_free_task():
    """Claim the caller's oldest free task in one statement: concurrent claims skip the row
    another claim has locked, so a task is never handed out twice."""
    oldest_free = (Task.select(Task.id)
                   .where((Task.owner == g.user.id) & Task.free)
                   .order_by(Task.id).limit(1)
                   .for_update("FOR UPDATE SKIP LOCKED"))
    with db.atomic():
        task = (Task.update(free=False).where(Task.id == oldest_free)
                .returning(Task).objects().execute())
        task = next(iter(task), None)
    if task is None:
        raise NotFound("no free task")
    response = task_json(task)
    return response, 200, {"Cache-Control": "no-store"}
