"""POST /users, GET and DELETE /users/<id>: a user acts on itself only."""
from __future__ import annotations

from flask import Blueprint, g, request, url_for
from peewee import IntegrityError
from werkzeug.exceptions import Conflict, Forbidden

from .. import auth, validation
from ..models import Task, User, db
from . import config, remove_images

bp = Blueprint("users", __name__)


def user_json(user: User) -> dict:
    return {"id": user.id, "email": user.email, "tasks_number": user.tasks_number}


def _own_id(user_id: int) -> int:
    if user_id != g.user.id:
        raise Forbidden("users can only act on themselves")
    return user_id


@bp.post("/users")
def create_user():
    email = validation.email(validation.json_object(request, config().max_content_length).get("email"))
    token, token_hash = auth.new_token()
    try:
        with db.atomic():
            user = User.create(email=email, token_hash=token_hash)
    except IntegrityError:
        raise Conflict("a user with this email already exists") from None
    location = url_for("users.get_user", user_id=user.id)
    return {**user_json(user), "token": token}, 201, {"Location": location}


@bp.get("/users/<id:user_id>")
def get_user(user_id: int):
    _own_id(user_id)
    return user_json(g.user)


@bp.delete("/users/<id:user_id>")
def delete_user(user_id: int):
    _own_id(user_id)
    with db.atomic():
        # Lock the user first: a concurrent task creation (its foreign key check) waits, so no
        # task of this user can appear between collecting the files and deleting the rows.
        User.select(User.id).where(User.id == user_id).for_update().execute()
        files = list(Task.delete().where(Task.owner == user_id)
                     .returning(Task.id, Task.image_ext).tuples().execute())
        User.delete().where(User.id == user_id).execute()
    remove_images(files)  # after COMMIT: a stray file is harmless, a lost one is not
    return "", 204
