"""HTTP endpoints, one blueprint per resource, and what they share."""
from __future__ import annotations

from flask import current_app, g
from werkzeug.exceptions import NotFound

from ..config import Config
from ..models import STATE, Task
from ..storage import ImageStorage


def image_storage() -> ImageStorage:
    return current_app.extensions["image_storage"]


def config() -> Config:
    return current_app.extensions["task_config"]


def _time(value) -> str | None:
    return value.isoformat() if value is not None else None


def task_json(task: Task, state: str | None = None) -> dict:
    """A task as the API shows it (``state`` when the query did not compute it)."""
    state = state or task.state
    return {"id": task.id, "meta": task.metadata, "owner_id": task.owner_id,
            "image_type": task.image_type, "state": state, "free": state == "free",
            "claimed_by": task.claimed_by_id if state != "free" else None,
            "claimed_at": _time(task.claimed_at) if state != "free" else None,
            "lease_expires_at": _time(task.lease_expires_at) if state == "claimed" else None,
            "completed_at": _time(task.completed_at)}


def tasks_with_state():
    """Tasks with their state computed by the database clock (``STATE``)."""
    return Task.select(Task, STATE)


def own_task(task_id: int) -> Task:
    """The caller's task; 404 for unknown ids and for other users' tasks alike."""
    task = tasks_with_state().where((Task.id == task_id) & (Task.owner == g.user.id)).first()
    if task is None:
        raise NotFound("no such task")
    return task
