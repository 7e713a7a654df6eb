"""The claim lifecycle: claim the oldest claimable task, then complete or release it.

``POST /tasks/claim`` takes the caller's oldest task that is free or whose lease ran out, in one
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``: concurrent claims skip the
row another one has locked, so a task is never handed out twice, and a task deleted meanwhile
is simply not returned. The answer carries the lease: its id (the claimant's proof, asked for
by complete and release), who claimed and when, and when it expires.

Complete and release succeed only with the current, unexpired lease, in one conditional
``UPDATE``; a lease that expired, was released or was taken over by a later claim gets 409.
"""
from __future__ import annotations

import uuid

from flask import Blueprint, g, request
from peewee import SQL, Value, fn
from werkzeug.exceptions import Conflict, NotFound

from .. import validation
from ..prepared import Prepared
from ..models import CLAIMABLE, Task, db
from . import LEASE, SECONDS, USER, config, task_json

bp = Blueprint("claims", __name__)

_oldest_claimable = (Task.select(Task.id)
                     .where((Task.owner == USER) & CLAIMABLE)
                     .order_by(Task.id).limit(1)
                     .for_update("FOR UPDATE SKIP LOCKED"))
# One statement, atomic by itself (autocommit): no BEGIN/COMMIT round trips around it.
CLAIM = Prepared(Task.update(free=False, claimed_by=USER, claimed_at=fn.now(),
                             lease_id=Value(LEASE),  # the hex of a fresh uuid4, as peewee sends it
                             lease_expires_at=fn.now() + SQL("make_interval(secs => %s)",
                                                             [SECONDS]))
                 .where(Task.id == _oldest_claimable).returning(Task),
                 Task, user=USER, lease=LEASE, seconds=SECONDS)


def _lease_json(task: dict) -> dict:
    return {"id": str(task["lease_id"]), "claimed_by": task["claimed_by"],
            "claimed_at": task["claimed_at"].isoformat(),
            "expires_at": task["lease_expires_at"].isoformat()}


@bp.post("/tasks/claim")
def claim_task():
    cfg = config()
    body = validation.json_object(request, cfg.max_content_length, optional=True)
    seconds = cfg.lease_seconds
    if "lease_seconds" in body:
        seconds = validation.integer(body["lease_seconds"], "lease_seconds", 1,
                                     cfg.max_lease_seconds)
    claimed = CLAIM.run(db, user=g.user.id, lease=uuid.uuid4().hex, seconds=seconds)
    task = claimed[0] if claimed else None
    if task is None:
        return "", 204, {"Cache-Control": "no-store"}
    return ({"task": task_json(task, "claimed"), "lease": _lease_json(task)}, 200,
            {"Cache-Control": "no-store"})


def _settle(task_id: int, changes: dict, state: str):
    """Apply ``changes`` to the caller's task if ``lease`` is its current, live lease."""
    body = validation.json_object(request, config().max_content_length)
    lease = validation.lease_id(body.get("lease"))
    updated = (Task.update(**changes)
               .where((Task.id == task_id) & (Task.owner == g.user.id)
                      & (Task.lease_id == lease) & ~Task.free
                      & Task.completed_at.is_null() & (Task.lease_expires_at > fn.now()))
               .returning(Task).dicts().execute())
    task = next(iter(updated), None)
    if task is not None:
        return task_json(task, state)
    if not Task.select().where((Task.id == task_id) & (Task.owner == g.user.id)).exists():
        raise NotFound("no such task")
    raise Conflict("this lease is not the task's current lease: it expired, was released, "
                   "or the task was completed or claimed again")


@bp.post("/tasks/<id:task_id>/complete")
def complete_task(task_id: int):
    return _settle(task_id, {"completed_at": fn.now()}, "done")


@bp.post("/tasks/<id:task_id>/release")
def release_task(task_id: int):
    return _settle(task_id, {"free": True, "claimed_by": None, "claimed_at": None,
                             "lease_id": None, "lease_expires_at": None}, "free")
