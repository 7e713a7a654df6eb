"""The OpenAPI 3.1 document of the task service, built from the same limits the code enforces.

Served at ``GET /openapi.json``. Every operation lists every status it can answer; every error
body is ``Error``. A test keeps the document and the code in step (routes against paths, every
status and body a test observes against the document), and schemathesis fuzzes the service
from it. Limits of the WSGI server (request line and header sizes, ``gunicorn_conf.py``) are
stated in ``info.description``: a request over them is refused by the server, in the same JSON
error format.
"""
from __future__ import annotations

from .auth import TOKEN_PATTERN
from .config import Config
from .images import FORMATS
from .validation import DEFAULT_PAGE, MAX_EMAIL, MAX_ID, MAX_META, MAX_PAGE

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
# A string PostgreSQL text can hold: no NUL (lone surrogates cannot be sent in UTF-8 JSON).
NO_NUL = "^[^\\u0000]*$"
# validation._EMAIL (checked after strip() and lower()), without NUL.
EMAIL_PATTERN = "^[^@\\s\\u0000]{1,64}@[^@\\s.\\u0000]+(\\.[^@\\s.\\u0000]+)+$"

ERROR_REASONS = {
    400: "The input is invalid (`field` names it), or the request itself is malformed (answered "
         "by the server: request line, headers, chunked framing).",
    401: "No or an unknown bearer token (also after the user was deleted).",
    403: "A user may act on itself only.",
    404: "No such resource of the caller (another user's task is 404 too); also an id not "
         "written in its canonical form (ASCII digits, no leading zero).",
    408: "The request did not arrive in time: its head within the server's head timeout, or "
         "its body at the minimum rate (see `info.description`).",
    409: "The request conflicts with the current state.",
    413: "The body is larger than the limit (with Content-Length or chunked).",
    414: "The request line is longer than 8190 bytes.",
    415: "The body is not of a media type the operation accepts.",
    416: "The requested byte range lies outside the image.",
    417: "An `Expect` header other than `100-continue`.",
    431: "More than 100 header fields, or one longer than 8190 bytes.",
    501: "A transfer coding other than `chunked`.",
    503: "The database or the image storage is unavailable, or a session limit cancelled the "
         "work; retry after `Retry-After` seconds.",
    507: "No room to store the image; nothing was stored.",
}
# Answered by the server itself, before any operation runs: any request may get them.
SERVER_ERRORS = (400, 408, 414, 417, 431, 501)


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _error_response(status: int) -> dict:
    response = {"description": ERROR_REASONS[status], "content": _json(_ref("schemas", "Error"))}
    if status == 503:
        response["headers"] = {"Retry-After": {
            "description": "Seconds to wait before retrying.", "required": True,
            "schema": {"type": "integer", "minimum": 0}}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {
            "description": "`Bearer realm=\"tasks\"`", "required": True,
            "schema": {"type": "string"}}}
    return response


def _responses(ok: dict, *errors: int, public: bool = False, database: bool = True) -> dict:
    statuses = (set(errors) | set(SERVER_ERRORS) | ({503} if database else set())
                | (set() if public else {401}))
    return {**ok, **{str(s): _ref("responses", str(s)) for s in sorted(statuses)}}


def _id_param(name: str, what: str) -> dict:
    return {"name": name, "in": "path", "required": True,
            "description": f"Id of the {what}, in canonical form: ASCII digits without a leading "
                           "zero (`/tasks/7`, not `/tasks/07` nor `/tasks/７`: those are 404).",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}


def _query_int(name: str, low: int, high: int, default: int, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default}}


def _schemas(config: Config) -> dict:
    timestamp = {"type": "string", "format": "date-time"}
    return {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z0-9_]+$",
                             "description": "The HTTP reason phrase in snake case."},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "The input at fault."}}}}},
        "User": {
            "type": "object", "required": ["id", "email", "tasks_number"],
            "additionalProperties": False,
            "properties": {"id": {"type": "integer"}, "email": {"type": "string"},
                           "tasks_number": {"type": "integer", "minimum": 0}}},
        "NewUser": {
            "type": "object", "required": ["email", "id", "tasks_number", "token"],
            "additionalProperties": False,
            "properties": {"id": {"type": "integer"}, "email": {"type": "string"},
                           "tasks_number": {"type": "integer", "minimum": 0},
                           "token": {"type": "string", "pattern": f"^{TOKEN_PATTERN}$",
                                     "description": "Shown once; send it as "
                                                    "`Authorization: Bearer <token>`."}}},
        "Task": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "meta", "owner_id", "image_type", "state", "free", "claimed_by",
                         "claimed_at", "lease_expires_at", "completed_at"],
            "properties": {
                "id": {"type": "integer"},
                "meta": {"type": "string", "maxLength": MAX_META},
                "owner_id": {"type": "integer"},
                "image_type": _nullable({"type": "string",
                                         "enum": sorted(k.mime for k in FORMATS.values())}),
                "state": {"type": "string", "enum": ["free", "claimed", "done"],
                          "description": "`free` also when a claim's lease ran out."},
                "free": {"type": "boolean", "description": "`state == \"free\"`."},
                "claimed_by": _nullable({"type": "integer"}),
                "claimed_at": _nullable(timestamp),
                "lease_expires_at": _nullable(timestamp),
                "completed_at": _nullable(timestamp)}},
        "TaskPage": {
            "type": "object", "required": ["items", "next"], "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": _ref("schemas", "Task"),
                                     "maxItems": MAX_PAGE},
                           "next": _nullable({"type": "integer",
                                              "description": "Pass as `after` for the next "
                                                             "page; null on the last page."})}},
        "Lease": {
            "type": "object", "required": ["id", "claimed_by", "claimed_at", "expires_at"],
            "additionalProperties": False,
            "properties": {"id": {"type": "string", "format": "uuid",
                                  "description": "The claimant's proof for complete/release."},
                           "claimed_by": {"type": "integer"}, "claimed_at": timestamp,
                           "expires_at": timestamp}},
        "Claim": {
            "type": "object", "required": ["task", "lease"], "additionalProperties": False,
            "properties": {"task": _ref("schemas", "Task"), "lease": _ref("schemas", "Lease")}},
        "LeaseProof": {
            "type": "object", "required": ["lease"],
            "properties": {"lease": {"type": "string", "format": "uuid"}}},
        "ClaimRequest": {
            "type": "object",
            "properties": {"lease_seconds": {
                "type": "integer", "minimum": 1, "maximum": config.max_lease_seconds,
                "default": config.lease_seconds}}},
        "Total": {
            "type": "object", "required": ["total_tasks_created"], "additionalProperties": False,
            "properties": {"total_tasks_created": {"type": "integer", "minimum": 0}}},
    }


def _paths(config: Config) -> dict:
    task_ok = {"description": "The task.", "content": _json(_ref("schemas", "Task"))}
    user_id, task_id = _id_param("user_id", "user"), _id_param("task_id", "task")
    image_content = {k.mime: {"schema": {"type": "string", "contentMediaType": k.mime}}
                     for k in FORMATS.values()}
    lease_body = {"required": True, "content": _json(_ref("schemas", "LeaseProof"))}
    image_types = ", ".join(k.mime for k in FORMATS.values())
    return {
        "/users": {"post": {
            "operationId": "createUser", "summary": "Create a user and issue its token.",
            "security": [], "tags": ["users"],
            "requestBody": {"required": True, "content": _json({
                "type": "object", "required": ["email"],
                "properties": {"email": {"type": "string", "maxLength": MAX_EMAIL,
                                         "pattern": EMAIL_PATTERN}}})},
            "responses": _responses({"201": {
                "description": "Created; the e-mail is stored in lower case.",
                "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                "content": _json(_ref("schemas", "NewUser"))}},
                400, 409, 413, 415, public=True)}},
        "/users/{user_id}": {
            "parameters": [user_id],
            "get": {"operationId": "getUser", "summary": "The caller itself.", "tags": ["users"],
                    "responses": _responses({"200": {"description": "The user.",
                                                     "content": _json(_ref("schemas", "User"))}},
                                            403, 404)},
            "delete": {"operationId": "deleteUser", "tags": ["users"],
                       "summary": "Delete the caller with its tasks and their images.",
                       "responses": _responses({"204": {"description": "Deleted."}}, 403, 404)}},
        "/tasks": {
            "get": {"operationId": "listTasks", "summary": "The caller's tasks, by id.",
                    "tags": ["tasks"],
                    "parameters": [
                        _query_int("after", 0, MAX_ID, 0, "Return tasks with a larger id."),
                        _query_int("limit", 1, MAX_PAGE, DEFAULT_PAGE, "Page size.")],
                    "responses": _responses({"200": {"description": "One page.",
                                                     "content": _json(_ref("schemas", "TaskPage"))}},
                                            400)},
            "post": {
                "operationId": "createTask", "tags": ["tasks"],
                "summary": "Create a task with its image.",
                "description": f"The image ({image_types}) is decoded: at most "
                               f"{config.max_image_pixels} pixels, complete, and nothing after "
                               "its end. The whole body is at most "
                               f"{config.max_content_length} bytes.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["meta", "image"],
                        "properties": {
                            "meta": {"type": "string", "maxLength": MAX_META, "pattern": NO_NUL},
                            "image": {"type": "string", "contentEncoding": "base64",
                                      "description": "The image file, base64."}}}},
                    "multipart/form-data": {
                        "schema": {"type": "object", "required": ["meta", "image"],
                                   "properties": {
                                       "meta": {"type": "string", "maxLength": MAX_META,
                                                "pattern": NO_NUL,
                                                "description": "UTF-8 text."},
                                       "image": {"type": "string",
                                                 "contentMediaType": "application/octet-stream",
                                                 "description": "The image file."}}},
                        "encoding": {"meta": {"contentType": "text/plain; charset=utf-8"}}}}},
                "responses": _responses({"201": {
                    "description": "Created, free.",
                    "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                    "content": _json(_ref("schemas", "Task"))}}, 400, 413, 415, 507)}},
        "/tasks/claim": {"post": {
            "operationId": "claimTask", "tags": ["claims"],
            "summary": "Claim the caller's oldest free task (or one whose lease ran out).",
            "requestBody": {"required": False,
                            "content": _json(_ref("schemas", "ClaimRequest"))},
            "responses": _responses({
                "200": {"description": "Claimed: the task and its lease.",
                        "headers": {"Cache-Control": {"required": True,
                                                      "schema": {"const": "no-store"}}},
                        "content": _json(_ref("schemas", "Claim"))},
                "204": {"description": "No task is free."}}, 400, 413, 415)}},
        "/tasks/{task_id}": {
            "parameters": [task_id],
            "get": {"operationId": "getTask", "tags": ["tasks"], "summary": "One task.",
                    "responses": _responses({"200": task_ok}, 404)},
            "delete": {"operationId": "deleteTask", "tags": ["tasks"],
                       "summary": "Delete a task and its image.",
                       "responses": _responses({"204": {"description": "Deleted."}}, 404)}},
        "/tasks/{task_id}/image": {
            "parameters": [task_id],
            "get": {"operationId": "getTaskImage", "tags": ["tasks"],
                    "summary": "The task's image, with its detected type.",
                    "description": "Conditional (`If-None-Match` with the `ETag` sent) and range "
                                   "requests are answered; `Cache-Control: private, no-cache` keeps "
                                   "shared caches from storing the owner's image (finding C2-50).",
                    "responses": _responses({"200": {
                        "description": "The bytes uploaded.",
                        "content": image_content},
                        "206": {"description": "The requested byte range (`Range: bytes=...`).",
                                "content": image_content},
                        "304": {"description": "Not modified since the `ETag` the client has."}},
                        404, 416)}},
        "/tasks/{task_id}/complete": {
            "parameters": [task_id],
            "post": {"operationId": "completeTask", "tags": ["claims"],
                     "summary": "Mark the claimed task done (needs its live lease).",
                     "requestBody": lease_body,
                     "responses": _responses({"200": task_ok}, 400, 404, 409, 413, 415)}},
        "/tasks/{task_id}/release": {
            "parameters": [task_id],
            "post": {"operationId": "releaseTask", "tags": ["claims"],
                     "summary": "Give the claimed task back (needs its live lease).",
                     "requestBody": lease_body,
                     "responses": _responses({"200": task_ok}, 400, 404, 409, 413, 415)}},
        "/total_tasks_created": {"get": {
            "operationId": "totalTasksCreated", "tags": ["stats"],
            "summary": "Tasks ever created (does not go down when tasks or users are deleted).",
            "responses": _responses({"200": {"description": "The counter.",
                                             "content": _json(_ref("schemas", "Total"))}})}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["docs"], "summary": "This document.",
            "security": [],
            "responses": _responses({"200": {"description": "OpenAPI 3.1.",
                                             "content": _json({"type": "object"})}},
                                    public=True, database=False)}},
    }


def _links(paths: dict) -> None:
    """Links that let a stateful client follow a created or claimed task."""
    created = {"task_id": "$response.body#/id"}
    paths["/tasks"]["post"]["responses"]["201"]["links"] = {
        "GetTask": {"operationId": "getTask", "parameters": created},
        "GetTaskImage": {"operationId": "getTaskImage", "parameters": created},
        "DeleteTask": {"operationId": "deleteTask", "parameters": created}}
    claimed = {"task_id": "$response.body#/task/id"}
    lease = {"lease": "$response.body#/lease/id"}
    paths["/tasks/claim"]["post"]["responses"]["200"]["links"] = {
        "CompleteTask": {"operationId": "completeTask", "parameters": claimed,
                         "requestBody": lease},
        "ReleaseTask": {"operationId": "releaseTask", "parameters": claimed,
                        "requestBody": lease}}


def document(config: Config) -> dict:
    paths = _paths(config)
    _links(paths)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Task service (Case 2, redesigned)", "version": API_VERSION,
            "description": (
                "Users own tasks with an image. A client claims the oldest free task with a "
                "lease, then completes or releases it; a lease that runs out frees the task. "
                "Every error is `Error`. Server limits: request line at most 8190 bytes, at "
                "most 100 header fields of at most 8190 bytes each; larger requests get "
                "400/414/431 in the same error format. The request head must arrive within "
                f"{config.request_head_timeout_s} s; a body gets {config.request_body_timeout_s} s "
                f"plus 1 s per {config.request_min_rate_bps} bytes, {config.request_read_max_s} s "
                "at most; a slower request gets 408. A transfer coding other than `chunked` "
                "gets 501, an `Expect` other than `100-continue` 417. A request whose body "
                "the service did not read to its end is answered with `Connection: close`. "
                "`Range` on an image: one byte range is answered 206 (416 when it lies outside "
                "the image); a Range of another unit, malformed, or of several ranges is "
                "ignored (200 with the whole image), as RFC 9110 section 14.2 allows.")},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": n} for n in ("users", "tasks", "claims", "stats", "docs")],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The token `POST /users` returned."}},
            "schemas": _schemas(config),
            "responses": {str(s): _error_response(s) for s in ERROR_REASONS},
        },
    }
