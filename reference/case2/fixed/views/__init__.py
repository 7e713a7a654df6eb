"""HTTP endpoints, one blueprint per resource, and what they share."""
from __future__ import annotations

from flask import current_app, g
from werkzeug.exceptions import NotFound

from ..config import Config
from ..prepared import Slot
from ..models import STATE, Task
from ..storage import ImageStorage


# Per-request values of the statements compiled once (``database.Prepared``).
USER, AFTER, LIMIT, LEASE, SECONDS, META, IMAGE_TYPE, IMAGE_EXT = (Slot(n) for n in range(8))


def image_storage() -> ImageStorage:
    return current_app.extensions["image_storage"]


def remove_images(files: list[tuple[int, str | None]]) -> None:
    """After the COMMIT that deleted their rows: remove the files; one the storage cannot
    remove now (read-only, failing) stays for the reconciler, and the deletion still stands."""
    left = image_storage().remove(files, strict=False)
    if left:
        current_app.logger.warning("image files of deleted tasks left for the reconciler: %s", left)


def config() -> Config:
    return current_app.extensions["task_config"]


def _time(value) -> str | None:
    return value.isoformat() if value is not None else None


def task_json(task: dict | Task, state: str | None = None) -> dict:
    """A task as the API shows it, from a row read with ``.dicts()`` (lists are the hot path:
    no model objects) or a model; ``state`` when the query did not compute it."""
    row = task if isinstance(task, dict) else task.__data__
    state = state or row["state"]
    return {"id": row["id"], "meta": row["metadata"], "owner_id": row["owner"],
            "image_type": row.get("image_type"), "state": state, "free": state == "free",
            "claimed_by": row.get("claimed_by") if state != "free" else None,
            "claimed_at": _time(row.get("claimed_at")) if state != "free" else None,
            "lease_expires_at": _time(row.get("lease_expires_at")) if state == "claimed" else None,
            "completed_at": _time(row.get("completed_at"))}


def tasks_with_state():
    """Task rows (dicts) with their state computed by the database clock (``STATE``)."""
    return Task.select(Task, STATE).dicts()


def own_task(task_id: int) -> dict:
    """The caller's task; 404 for unknown ids and for other users' tasks alike."""
    task = tasks_with_state().where((Task.id == task_id) & (Task.owner == g.user.id)).first()
    if task is None:
        raise NotFound("no such task")
    return task
