"""The half-fixed task service (see the package docstring): everything but the two races fixed.

API (its own shape, described to the checker by ``taskcheck/examples/half_fixed.yaml``):
``POST /users`` -> 201 ``{id, email, api_key}``; identity in the ``X-Api-Key`` header;
``GET /tasks`` a JSON array of the caller's tasks; ``POST /tasks/claim`` -> 200 task or 204;
``GET /total_tasks_created``. Schema: ``flask --app reference.case2.half_fixed.app init-db``.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import secrets

from flask import Flask, g, jsonify, request, send_file
from peewee import (
    BooleanField,
    CharField,
    DoesNotExist,
    ForeignKeyField,
    IdentityField,
    IntegerField,
    IntegrityError,
    Model,
    PostgresqlDatabase,
    TextField,
)
from playhouse.db_url import parse
from werkzeug.exceptions import BadRequest, Conflict, Forbidden, HTTPException, NotFound, Unauthorized

db = PostgresqlDatabase(None)
_url = os.environ.get("DATABASE_URL")
if _url:
    _params = parse(_url)
    db.init(_params.pop("database"), **_params)

STORAGE = os.path.abspath(os.environ.get("IMAGE_STORAGE_DIR", os.path.join("storage", "task_images")))
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png", "image/png"), (b"\xff\xd8\xff", "jpg", "image/jpeg"),
              (b"GIF87a", "gif", "image/gif"), (b"GIF89a", "gif", "image/gif"), (b"BM", "bmp", "image/bmp"))


class BaseModel(Model):
    class Meta:
        database = db


class User(BaseModel):
    id = IdentityField()
    email = CharField(max_length=254, unique=True)
    api_key = CharField(max_length=64, unique=True)
    tasks_number = IntegerField(default=0)


class Task(BaseModel):
    id = IdentityField()
    free = BooleanField(default=True)
    metadata = TextField()
    owner = ForeignKeyField(User, on_delete="CASCADE")
    image_ext = CharField(max_length=8)
    image_type = CharField(max_length=32)


class Stats(BaseModel):
    id = IntegerField(primary_key=True)
    tasks_created = IntegerField(default=0)


app = Flask(__name__, static_folder=None)
app.config["MAX_CONTENT_LENGTH"] = 10 * 2**20


@app.cli.command("init-db")
def init_db():
    """Create the tables and the counters row."""
    with db.connection_context():
        db.create_tables((User, Task, Stats))
        Stats.insert(id=1, tasks_created=0).on_conflict_ignore().execute()
    os.makedirs(STORAGE, exist_ok=True)


@app.before_request
def open_connection():
    db.connect(reuse_if_open=True)
    if request.endpoint != "create_user":
        key = request.headers.get("X-Api-Key", "")
        g.user = User.get_or_none(User.api_key == key) if key else None
        if g.user is None:
            raise Unauthorized("an X-Api-Key header of a user is required")


@app.teardown_request
def close_connection(exc):
    if not db.is_closed():
        db.close()


@app.errorhandler(HTTPException)
def http_error(exc):
    return jsonify({"error": exc.description}), exc.code


@app.errorhandler(DoesNotExist)
def not_found(exc):
    return jsonify({"error": "not found"}), 404


@app.errorhandler(Exception)
def server_error(exc):
    app.logger.exception("unhandled error")
    return jsonify({"error": "internal error"}), 500


def text(body, name, limit):
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise BadRequest(f"{name} must be a string of at most {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid Unicode") from None
    return value


def json_body():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def remove_file(name):
    try:
        os.remove(os.path.join(STORAGE, name))
    except FileNotFoundError:
        pass


def task_json(task):
    return {"id": task.id, "free": task.free, "meta": task.metadata}


def own_task(task_id):
    return Task.get((Task.id == task_id) & (Task.owner == g.user.id))


@app.route("/users", methods=["POST"])
def create_user():
    email = text(json_body(), "email", 254).strip().lower()
    if not EMAIL.fullmatch(email):
        raise BadRequest("email is not a valid address")
    try:
        with db.atomic():
            user = User.create(email=email, api_key=secrets.token_hex(24))
    except IntegrityError:
        raise Conflict("email already registered") from None
    return jsonify({"id": user.id, "email": user.email, "api_key": user.api_key}), 201


@app.route("/users/<int:user_id>", methods=["DELETE"])
def delete_user(user_id):
    if user_id != g.user.id:
        raise Forbidden("users can only delete themselves")
    with db.atomic():
        files = [f"{t.id}.{t.image_ext}" for t in Task.select().where(Task.owner == user_id)]
        g.user.delete_instance(recursive=True)
    for name in files:
        remove_file(name)
    return "", 204


@app.route("/tasks", methods=["GET"])
def list_tasks():
    return jsonify([task_json(t) for t in Task.select().where(Task.owner == g.user.id).order_by(Task.id)])


@app.route("/tasks", methods=["POST"])
def create_task():
    body = json_body()
    meta = text(body, "meta", 10000)
    try:
        image = base64.b64decode(text(body, "image", 2**30), validate=True)
    except binascii.Error:
        raise BadRequest("image is not base64") from None
    kind = next((k for k in SIGNATURES if image.startswith(k[0])), None)
    if kind is None:
        raise BadRequest("image is not a PNG, JPEG, GIF or BMP")
    with db.atomic():
        # RACE KEPT (C2-02): read-modify-write of counters read before the work is done (the
        # user at authentication, the service-wide row here), written back as absolute values.
        stats = Stats.get_by_id(1)
        task = Task.create(owner=g.user.id, metadata=meta, image_ext=kind[1], image_type=kind[2])
        with open(os.path.join(STORAGE, f"{task.id}.{kind[1]}"), "wb") as f:
            f.write(image)
        g.user.tasks_number += 1
        g.user.save(only=[User.tasks_number])
        stats.tasks_created += 1
        stats.save()
    return jsonify(task_json(task)), 201


@app.route("/tasks/<int:task_id>", methods=["GET"])
def get_task(task_id):
    return jsonify(task_json(own_task(task_id)))


@app.route("/tasks/<int:task_id>/image", methods=["GET"])
def get_image(task_id):
    task = own_task(task_id)
    path = os.path.join(STORAGE, f"{task.id}.{task.image_ext}")
    if not os.path.exists(path):
        raise NotFound("image file missing")
    return send_file(path, mimetype=task.image_type)


@app.route("/tasks/<int:task_id>", methods=["DELETE"])
def delete_task(task_id):
    with db.atomic():
        task = own_task(task_id)
        Task.delete().where(Task.id == task.id).execute()
    remove_file(f"{task.id}.{task.image_ext}")
    return "", 204


@app.route("/tasks/claim", methods=["POST"])
def claim_task():
    with db.atomic():
        # RACE KEPT (C2-01): select, then update in a second statement, no lock, no re-check.
        task = Task.select().where((Task.owner == g.user.id) & (Task.free == True)).first()  # noqa: E712
        if task is None:
            return "", 204
        task.free = False
        task.save(only=[Task.free])
    return jsonify(task_json(task))


@app.route("/total_tasks_created", methods=["GET"])
def total_tasks_created():
    return jsonify({"total_tasks_created": Stats.get_by_id(1).tasks_created})
