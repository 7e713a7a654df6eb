"""GET /openapi.json: the API's contract, served by the service it describes."""
from __future__ import annotations

from flask import Blueprint, current_app

from ..openapi import document

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi_document():
    return document(current_app.extensions["task_config"])
