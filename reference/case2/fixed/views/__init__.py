"""HTTP endpoints, one blueprint per resource."""
from flask import current_app

from ..storage import ImageStorage


def image_storage() -> ImageStorage:
    return current_app.extensions["image_storage"]
