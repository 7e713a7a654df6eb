"""The image file on disk against the database row, on every path."""
from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import peewee

from workbench.image_corpus import encode, pixels

from .helpers import BMP_1PX, JPEG_4PX, PNG_1PX, evidence


@evidence("C2-16")
def test_missing_storage_dir_row_committed_later_without_file(make_service, side):
    svc = make_service(storage=False)
    user = svc.api.create_user("a@example.com")
    r = svc.api.post_task(user)
    svc.api.get("/total_tasks_created", user)  # the next request on that thread
    if side == "as_given":
        assert r.status_code == 500
        assert svc.error_texts()[0].startswith("FileNotFoundError: [Errno 2] No such file or directory: "
                                               "'storage/task_images/1.jpg'")
        # The row and the counter were committed by the next request; no file exists.
        assert svc.db.tasks() == [(1, True, "meta", user["id"])]
        assert svc.db.tasks_number(user["id"]) == 1
        assert not (svc.workdir / "storage").exists()
        # Such a task can never be deleted, and its image is a 500.
        (svc.workdir / "storage" / "task_images").mkdir(parents=True)
        assert svc.api.delete("/tasks/1", user).status_code == 500
        assert svc.api.get("/tasks/1/image", user).status_code == 500
        svc.api.get("/total_tasks_created", user)
        assert svc.db.tasks() == [(1, True, "meta", user["id"])]
    else:
        # The directory is created on the first write; the row and its file arrive together.
        assert r.status_code == 201, r.text
        assert svc.db.tasks() == [(1, True, "meta", user["id"])]
        assert svc.db.tasks_number(user["id"]) == 1
        assert svc.stored_files() == ["1.jpg"]  # the file, and no staged leftover
        assert svc.image_path(1).read_bytes() == JPEG_4PX
        image = svc.api.get("/tasks/1/image", user)
        assert image.status_code == 200 and image.content == JPEG_4PX
        assert svc.api.delete("/tasks/1", user).status_code == 204
        assert svc.db.tasks() == [] and svc.stored_files() == []


@evidence("C2-17")
def test_image_written_under_cwd_but_served_from_app_root(service, side):
    user = service.api.create_user("a@example.com")
    task = service.api.create_task(user, image=JPEG_4PX)
    assert service.image_path(task["id"]).read_bytes() == JPEG_4PX
    r = service.api.get(f"/tasks/{task['id']}/image", user)
    if side == "as_given":
        assert r.status_code == 500
        missing = service.errors[0]
        assert isinstance(missing, FileNotFoundError)
        assert missing.filename.endswith("reference/case2/as_given/storage/task_images/1.jpg")
    else:
        assert r.status_code == 200 and r.content == JPEG_4PX


@evidence("C2-18")
def test_every_format_stored_as_jpg_and_served_as_jpeg(image_service, side):
    svc = image_service
    user = svc.api.create_user("a@example.com")
    served = {}
    for name, data in {"png": PNG_1PX, "bmp": BMP_1PX, "text": b"<svg onload=alert(1)>"}.items():
        if side == "fixed" and name == "text":
            assert svc.api.post_task(user, image=data).status_code == 400  # not an image
            continue
        task = svc.api.create_task(user, image=data)
        r = svc.api.get(f"/tasks/{task['id']}/image", user)
        assert r.status_code == 200 and r.content == data
        served[name] = (r.headers["Content-Type"], svc.image_path(task["id"]).name)
    if side == "as_given":
        assert served == {"png": ("image/jpeg", "1.jpg"), "bmp": ("image/jpeg", "2.jpg"),
                          "text": ("image/jpeg", "3.jpg")}
        assert "X-Content-Type-Options" not in r.headers
    else:
        assert served["png"][0] == "image/png" and served["bmp"][0] == "image/bmp"
        assert "text" not in served


@evidence("C2-19")
def test_delete_removes_file_then_fails_in_database(service, monkeypatch, side):
    user = service.api.create_user("a@example.com")
    task = service.api.create_task(user)
    original = peewee.Database.execute_sql

    def failing_delete(db, sql, params=None, *a, **k):
        if sql.startswith('DELETE FROM "task"'):
            raise peewee.OperationalError("simulated failure of the DELETE")
        return original(db, sql, params, *a, **k)

    monkeypatch.setattr(peewee.Database, "execute_sql", failing_delete)
    r = service.api.delete(f"/tasks/{task['id']}", user)
    monkeypatch.setattr(peewee.Database, "execute_sql", original)
    file_after_failure = service.image_path(task["id"]).exists()
    retry = service.api.delete(f"/tasks/{task['id']}", user)
    if side == "as_given":
        assert r.status_code == 500
        assert not service.image_path(task["id"]).exists()  # the file is gone
        assert [t[0] for t in service.db.tasks()] == [task["id"]]  # the row is not
        assert retry.status_code == 500  # and the task can no longer be deleted
        assert service.error_names() == ["OperationalError", "FileNotFoundError"]
    else:
        # A failing database statement is "retry later", and nothing was removed.
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert file_after_failure  # row and file both kept
        assert retry.status_code == 204
        assert service.db.tasks() == [] and not service.image_path(task["id"]).exists()


@evidence("C2-20")
def test_user_deletion_cascades_rows_but_leaves_files(service, side):
    user = service.api.create_user("a@example.com")
    tasks = [service.api.create_task(user) for _ in range(3)]
    r = service.api.delete(f"/users/{user['id']}", user)
    assert r.status_code in (200, 204)
    assert service.db.tasks() == [] and service.db.users() == []
    left = sorted(p.name for p in (service.workdir / "storage" / "task_images").iterdir())
    if side == "as_given":
        assert left == [f"{t['id']}.jpg" for t in tasks]
    else:
        assert left == []


def _cache_directives(response) -> dict:
    """Cache-Control as {directive: value or None}."""
    out = {}
    for part in filter(None, (p.strip() for p in response.headers.get("Cache-Control", "").split(","))):
        name, _, value = part.partition("=")
        out[name.lower()] = value or None
    return out


def _photo() -> bytes:
    return encode(pixels(64, 64, "RGB", 5), "JPEG")


@evidence("C2-50", present_on=("2020",))
def test_owner_only_image_is_publicly_cacheable(image_service, side, stack):
    svc = image_service
    user = svc.api.create_user("a@example.com")
    task = svc.api.create_task(user, image=_photo())
    r = svc.api.get(f"/tasks/{task['id']}/image", user)
    assert r.status_code == 200 and r.content == _photo()
    cache = _cache_directives(r)
    if side == "as_given" and stack == "2020":
        # Flask 1.1's send_file: SEND_FILE_MAX_AGE_DEFAULT is 12 hours, and the answer says any
        # cache, a shared one included, may keep it and serve it without asking again.
        assert cache == {"public": None, "max-age": "43200"}
        lifetime = parsedate_to_datetime(r.headers["Expires"]).timestamp() - time.time()
        assert 43200 - 120 < lifetime <= 43200
        # The owner deletes the task: the service no longer has the image, what a cache stored
        # is still fresh for 12 hours.
        assert svc.api.delete(f"/tasks/{task['id']}", user).status_code == 200
        assert svc.api.get(f"/tasks/{task['id']}/image", user).status_code == 500
    elif side == "as_given":
        # Flask >= 2.0: no max-age by default; "no-cache" makes every reuse ask the service again.
        assert "public" not in cache and "no-cache" in cache and "Expires" not in r.headers
    else:
        assert "private" in cache or "no-store" in cache, cache
        assert "public" not in cache and "s-maxage" not in cache and cache.get("max-age") in (None, "0")


@evidence("C2-51", present_on=("2020",))
def test_image_download_ignores_conditional_and_range_requests(image_service, side, stack):
    svc = image_service
    user = svc.api.create_user("a@example.com")
    photo = _photo()
    task = svc.api.create_task(user, image=photo)
    path = f"/tasks/{task['id']}/image"
    first = svc.api.get(path, user)
    again = svc.api.get(path, user, headers={"If-None-Match": first.headers["ETag"]})
    part = svc.api.get(path, user, headers={"Range": "bytes=0-99"})
    if side == "as_given" and stack == "2020":
        # Flask 1.1's send_file is not conditional by default: it sends an ETag it then ignores.
        assert (again.status_code, again.content) == (200, photo)
        assert (part.status_code, part.content) == (200, photo) and "Accept-Ranges" not in first.headers
    else:
        assert (again.status_code, again.content) == (304, b"")
        assert (part.status_code, part.content) == (206, photo[:100])
