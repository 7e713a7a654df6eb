"""GET /total_tasks_created."""
from __future__ import annotations

from flask import Blueprint

from ..models import total_tasks_created

bp = Blueprint("stats", __name__)


@bp.get("/total_tasks_created")
def get_total_tasks_created():
    return {"total_tasks_created": total_tasks_created()}
