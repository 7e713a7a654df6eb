"""Faults of the platform against the fixed service: the database goes away or freezes, COMMIT
fails, the disk fills up or turns read-only, a user disappears mid-request, a worker is killed
with SIGKILL during uploads, a lock or a transaction is held too long. Each ends in a documented
answer (503 with Retry-After, 507, 401) within a bounded time, and in a consistent state: every
row has its file, every file its row.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time

import peewee
import pytest

from workbench import pg
from workbench import service_runner as runner

from .conftest import fixed_contract, fixed_service_module
from .helpers import PROTOCOLS, Api, Gate, JPEG_4PX, in_threads, wait_until


@pytest.fixture
def side():
    return "fixed"


def _png(size: int, seed: int = 0) -> bytes:
    """A real PNG of about ``size`` bytes (noise, stored uncompressed)."""
    import io
    import random

    from PIL import Image

    edge = max(1, int((size / 3) ** 0.5))
    pixels = random.Random(seed).randbytes(edge * edge * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (edge, edge), pixels).save(out, "PNG", compress_level=0)
    return out.getvalue()


def _consistent(svc_db, storage_dir) -> tuple[set, set]:
    """(rows whose file is missing, files without their row or staged) — both empty when the
    image directory and the task table agree."""
    rows = {f"{i}.{ext}" for i, ext in svc_db.all("SELECT id, image_ext FROM task")}
    files = {p.name for p in storage_dir.iterdir()} if storage_dir.is_dir() else set()
    return rows - files, files - rows


# --------------------------------------------------------------------------- the database down


@contextlib.contextmanager
def _private_postgres():
    """A PostgreSQL of this test's own, which the test may stop and start again."""
    with pg.embedded_pgserver(prefix="workbench-pg-fault-") as server:
        yield server


def _stop_postgres(server) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user,
           timeout=30)


@contextlib.contextmanager
def _frozen(server):
    """Every process of a private PostgreSQL stopped (SIGSTOP: the postmaster first, so that
    it forks no backend meanwhile), and always continued (SIGCONT) on the way out."""
    import psutil

    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    stopped = []
    try:
        postmaster = psutil.Process(pid)
        postmaster.suspend()
        stopped.append(postmaster)
        for child in postmaster.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.suspend()
                stopped.append(child)
        yield stopped
    finally:
        for process in reversed(stopped):
            with contextlib.suppress(psutil.Error):
                process.resume()


@pytest.mark.finding("C2-04", side="fixed")
def test_database_down_is_503_with_retry_after_and_recovers(workdir, inspector):
    with _private_postgres() as pg_server:
        storage = workdir / "storage" / "task_images"
        module = fixed_service_module(pg_server.get_uri(), storage)
        server = runner.InProcessServer(module, model="pool", threads=1, warm=False).start()
        try:
            api = Api(server.base_url, PROTOCOLS["fixed"], contract=fixed_contract(module.config))
            user = api.create_user("a@example.com")
            assert api.post_task(user).status_code == 201
            _stop_postgres(pg_server)
            down = [api.get("/tasks", user), api.post_task(user, meta="during the outage"),
                    api.claim(user), api.get("/total_tasks_created", user)]
            assert [r.status_code for r in down] == [503] * 4
            assert all(r.headers["Retry-After"] == str(module.config.retry_after_s) for r in down)
            assert {r.json()["error"]["code"] for r in down} == {"service_unavailable"}
            assert sorted(p.name for p in storage.iterdir()) == ["1.jpg"]  # nothing staged left
            pg_server.ensure_postgres_running()
            # The same process, not restarted: the very next requests succeed.
            assert api.get("/tasks", user).status_code == 200
            after = api.post_task(user, meta="after")
            assert after.status_code == 201
            metas = [t["meta"] for t in api.get("/tasks", user).json()["items"]]
            assert metas == ["meta", "after"]
            # (An immediate shutdown skips identity values: the new id is not 2.)
            assert sorted(p.name for p in storage.iterdir()) == ["1.jpg", f"{after.json()['id']}.jpg"]
        finally:
            server.stop()
            module.db.close_all()


@pytest.mark.finding("C2-05", side="fixed")
def test_a_frozen_database_is_503_within_a_bound_and_the_service_recovers(workdir):
    """PostgreSQL's processes stopped (``kill -STOP``): its own limits cannot fire, and psycopg2
    has no timeout of its own. A statement on a pooled connection is cut by the service's
    watchdog, a new connection by ``connect_timeout``: 503 with Retry-After, within both
    bounds; nothing half-written; once the server continues, the same process serves again."""
    with _private_postgres() as pg_server:
        storage = workdir / "storage" / "task_images"
        module = fixed_service_module(pg_server.get_uri(), storage, connect_timeout_s=2,
                                      statement_timeout_ms=1000, db_response_timeout_ms=2000)
        server = runner.InProcessServer(module, model="pool", threads=3, warm=False).start()
        try:
            api = Api(server.base_url, PROTOCOLS["fixed"], contract=fixed_contract(module.config),
                      timeout=30)
            user = api.create_user("a@example.com")
            assert api.post_task(user).status_code == 201
            bound = 2 + 2 + 6  # connect_timeout, then the watchdog; the rest is margin for load
            with _frozen(pg_server) as stopped:
                assert stopped
                started = time.monotonic()
                down = in_threads(lambda: api.get("/tasks", user),
                                  lambda: api.post_task(user, meta="while frozen"),
                                  lambda: api.get("/total_tasks_created", user), timeout=60)
                waited = time.monotonic() - started
            assert [getattr(r, "status_code", r) for r in down] == [503] * 3, down
            assert all(r.headers["Retry-After"] == str(module.config.retry_after_s) for r in down)
            assert waited < bound, waited
            # Continued: the same process serves again, and nothing of the frozen request stays.
            wait_until(lambda: api.get("/tasks", user).status_code == 200, timeout=30,
                       what="the service serves again")
            metas = [t["meta"] for t in api.get("/tasks", user).json()["items"]]
            assert metas == ["meta"]
            wait_until(lambda: sorted(p.name for p in storage.iterdir()) == ["1.jpg"], timeout=20,
                       what="nothing of the frozen upload is left")
            assert api.post_task(user, meta="after").status_code == 201
        finally:
            server.stop()
            module.db.close_all()


# --------------------------------------------------------------------------- COMMIT fails


@pytest.mark.finding("C2-16", side="fixed")
@pytest.mark.parametrize("outcome", ["not committed", "committed, answer lost",
                                     "not committed, database away at first"])
def test_a_file_whose_commit_failed_converges_to_its_row(make_service, monkeypatch, outcome):
    """COMMIT raises: the request cannot know whether its row exists, so it keeps the file and
    answers 503. The file is then decided by the row in a connection of its own, retried while
    the database cannot say: removed if the row does not exist, kept if it does. Before, the
    file stayed until the next restart of the worker."""
    import flask

    svc = make_service(config={"reconcile_retry_s": 1})
    user = svc.api.create_user("a@example.com")
    db = svc.module.db
    real_commit = db.commit

    def failing_commit():
        if flask.has_request_context() and flask.request.path == "/tasks":
            if outcome.startswith("committed"):
                real_commit()
            else:
                db.rollback()
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return real_commit()

    monkeypatch.setattr(db, "commit", failing_commit)
    pending = svc.module.app.extensions["pending_files"]
    if outcome.endswith("at first"):
        real_check, calls = pending.check, []

        def check_later(task_id, ext):
            calls.append(task_id)
            if len(calls) <= 2:
                raise peewee.OperationalError("could not connect to server")
            return real_check(task_id, ext)

        monkeypatch.setattr(pending, "check", check_later)
    r = svc.api.post_task(user)
    assert r.status_code == 503 and "Retry-After" in r.headers
    wait_until(lambda: not pending.waiting(), timeout=15, what="the file is decided")
    assert _consistent(svc.db, svc.storage_dir) == (set(), set())
    if outcome.startswith("committed"):
        assert [t[0] for t in svc.db.tasks()] == [1] and svc.stored_files() == ["1.jpg"]
    else:
        assert svc.db.tasks() == [] and svc.stored_files() == []
    if outcome.endswith("at first"):
        assert len(calls) == 3  # two failed attempts, then the decision


# --------------------------------------------------------------------------- the disk full


@contextlib.contextmanager
def _small_filesystem(path, size_kib: int):
    """A real file system of ``size_kib`` at ``path``: a size-limited tmpfs (needs the mount
    privilege; the test is skipped without it)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                              str(path)], capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.mark.finding("C2-16", side="fixed")
def test_storage_full_is_507_and_stores_nothing(make_service):
    svc = make_service()
    user = svc.api.create_user("a@example.com")
    image = _png(48 * 1024)
    with _small_filesystem(svc.storage_dir, size_kib=128):
        filler = svc.storage_dir / "filler"
        with open(filler, "wb") as f:  # leave less room than one upload needs
            with contextlib.suppress(OSError):
                f.write(bytes(100 * 1024))
        full = svc.api.post_task(user, image=image)
        assert full.status_code == 507, full.text
        assert full.json()["error"]["code"] == "insufficient_storage"
        assert svc.db.tasks() == [] and svc.db.tasks_number(user["id"]) == 0
        assert sorted(p.name for p in svc.storage_dir.iterdir()) == ["filler"]
        filler.unlink()  # room again: the same request now succeeds
        ok = svc.api.post_task(user, image=image)
        assert ok.status_code == 201
        assert svc.image_path(ok.json()["id"], "png").read_bytes() == image
    assert svc.errors == []


@pytest.mark.finding("C2-16", side="fixed")
def test_read_only_storage_is_503_and_stores_nothing(make_service):
    """The image file system remounted read-only (what the kernel does after an I/O error):
    uploads answer 503 with Retry-After in the error format, with nothing stored and the
    counter unchanged; reads go on; a deletion still deletes (its file is left for the
    reconciler). Writable again: the same upload succeeds, the reconciler removes the file."""
    svc = make_service()
    user = svc.api.create_user("a@example.com")
    with _small_filesystem(svc.storage_dir, size_kib=1024):
        first, second = svc.api.create_task(user), svc.api.create_task(user)
        subprocess.run(["mount", "-o", "remount,ro", str(svc.storage_dir)], check=True,
                       capture_output=True, timeout=30)
        try:
            refused = [svc.api.post_task(user), svc.api.post_task_multipart(user)]
            assert [r.status_code for r in refused] == [503, 503], [r.text for r in refused]
            assert all(r.json()["error"]["code"] == "service_unavailable"
                       and r.headers["Retry-After"] for r in refused)
            assert len(svc.db.tasks()) == 2 and svc.db.tasks_number(user["id"]) == 2
            assert svc.api.get(f"/tasks/{first['id']}/image", user).status_code == 200
            assert svc.api.delete(f"/tasks/{second['id']}", user).status_code == 204
            assert [t[0] for t in svc.db.tasks()] == [first["id"]]
            assert svc.stored_files() == ["1.jpg", "2.jpg"]  # the file waits for the reconciler
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(svc.storage_dir)],
                           capture_output=True, timeout=30)
        assert _run_reconcile(svc)["orphans_removed"] == 1
        assert svc.stored_files() == ["1.jpg"]
        assert svc.api.post_task(user).status_code == 201
    assert svc.errors == []


# --------------------------------------------------------------------------- a user deleted


@pytest.mark.finding("C2-20", side="fixed")
@pytest.mark.parametrize("held", ["before the INSERT", "after the INSERT"])
def test_user_deleted_while_a_task_is_created(make_service, monkeypatch, held):
    svc = make_service(threads=2)
    user = svc.api.create_user("a@example.com")
    gate = Gate()
    gate.install(monkeypatch, peewee.Database, "execute_sql",
                 lambda request, db, sql, *a, **k: (request.path == "/tasks"
                                                    and sql.startswith('INSERT INTO "task"')),
                 where="before" if held == "before the INSERT" else "after")

    def delete_user_meanwhile():
        assert gate.reached.wait(10)
        try:
            if held == "after the INSERT":
                # The deletion waits for the creation's key-share lock on the user row.
                threading.Timer(0.3, gate.open).start()
            return svc.api.delete(f"/users/{user['id']}", user)
        finally:
            gate.open()

    created, deleted = in_threads(lambda: svc.api.post_task(user), delete_user_meanwhile)
    assert deleted.status_code == 204
    if held == "before the INSERT":
        assert created.status_code == 401  # the user no longer exists
    else:
        assert created.status_code == 201  # created, then deleted with its user
    assert svc.db.users() == [] and svc.db.tasks() == []
    assert svc.stored_files() == []  # no file, no staged upload
    assert svc.errors == []


# --------------------------------------------------------------------------- kill -9 of a worker


def _worker_pids(proc) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(proc.proc.pid).children()]


@pytest.mark.finding("C2-16", side="fixed")
def test_kill_9_during_uploads_leaves_no_row_without_file_nor_file_without_row(
        make_process, inspector, workdir):
    proc = make_process("gunicorn", threads=8)
    storage = workdir / "storage" / "task_images"
    user = proc.api.create_user("a@example.com")
    # Debris a crash could have left: a staged upload of a dead writer, a placed file whose
    # transaction never committed. The reconciler must remove both.
    (storage / ".upload-999999999-x.tmp").write_bytes(b"partial")
    (storage / "2147483000.png").write_bytes(_png(1000))
    images = [_png(400 * 1024, seed) for seed in range(4)]
    stop, outcomes = threading.Event(), []

    def uploader(i):
        while not stop.is_set():
            try:
                r = proc.api.post_task(user, meta=f"u{i}", image=images[i % len(images)])
                outcomes.append(r.status_code)
            except Exception as exc:  # noqa: BLE001 - connections die with the worker
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=uploader, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: outcomes.count(201) >= 8, what="uploads are flowing")
    victims = _worker_pids(proc)
    os.kill(victims[0], signal.SIGKILL)
    wait_until(lambda: set(_worker_pids(proc)) - set(victims), what="gunicorn replaced the worker")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(15)
    killed = [o for o in outcomes if not isinstance(o, int)]
    assert killed, "no request was in flight when the worker was killed"
    assert all(o in (201,) for o in outcomes if isinstance(o, int)), outcomes
    # The master reconciles after the worker's death; files of transactions that died with it
    # are removed once PostgreSQL has aborted them.
    wait_until(lambda: _consistent(inspector, storage) == (set(), set()), timeout=20,
               what="the image directory matches the task table")
    log = proc.log()
    reports = [json.loads(m.replace("'", '"')) for m in
               re.findall(r"reconcile \(worker \d+ exited\): (\{.*\})", log)]
    assert reports and sum(r["staged_removed"] for r in reports) >= 1, log[-2000:]
    assert sum(r["orphans_removed"] for r in reports) >= 1
    for task_id, ext in inspector.all("SELECT id, image_ext FROM task"):
        assert (storage / f"{task_id}.{ext}").read_bytes() in images


@pytest.mark.finding("C2-16", side="fixed")
def test_reconciler_spares_files_of_transactions_in_flight(service, monkeypatch):
    from reference.case2.fixed.reconcile import LOCK_SPACE

    svc = service
    user = svc.api.create_user("a@example.com")
    kept = svc.api.create_task(user)
    storage = svc.storage_dir
    (storage / "99.png").write_bytes(b"placed, transaction still open")
    (storage / "98.png").write_bytes(b"placed, transaction died")
    (storage / f".upload-{os.getpid()}-live.tmp").write_bytes(b"being written")
    (storage / ".upload-999999999-dead.tmp").write_bytes(b"writer gone")
    import psycopg2

    in_flight = psycopg2.connect(svc.module.config.database_url)
    try:
        with in_flight.cursor() as cur:  # what a creating transaction holds while it places
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, 99))
        first = _run_reconcile(svc)
        assert first == {"staged_removed": 1, "staged_kept": 1, "orphans_removed": 1,
                         "in_flight": 1, "files_kept": 1, "rows_without_file": 0}
        assert svc.stored_files() == [f".upload-{os.getpid()}-live.tmp", "1.jpg", "99.png"]
    finally:
        in_flight.rollback()  # the transaction dies without a row
        in_flight.close()
    second = _run_reconcile(svc)
    assert second["orphans_removed"] == 1 and second["in_flight"] == 0
    assert svc.stored_files() == [f".upload-{os.getpid()}-live.tmp", "1.jpg"]
    svc.image_path(kept["id"]).unlink()  # a row without its file is reported, not "fixed"
    assert _run_reconcile(svc)["rows_without_file"] == 1
    assert [t[0] for t in svc.db.tasks()] == [kept["id"]]


@pytest.mark.finding("C2-16", side="fixed")
def test_creating_a_task_holds_its_placement_lock_while_the_file_is_placed(service, monkeypatch):
    # The reconciler's guarantee rests on this: while a creating transaction places its file,
    # that task's advisory lock is taken, so the reconciler skips the file (in flight).
    import psycopg2

    from reference.case2.fixed import storage as storage_module
    from reference.case2.fixed.reconcile import LOCK_SPACE

    svc = service
    user = svc.api.create_user("a@example.com")
    seen = []
    place = storage_module.ImageStorage.place

    def place_and_probe(self, staged, task_id, ext):
        probe = psycopg2.connect(svc.module.config.database_url)
        try:
            probe.autocommit = True
            with probe.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, task_id))
                free = cur.fetchone()[0]
                if free:
                    cur.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, task_id))
            seen.append((task_id, free))
        finally:
            probe.close()
        return place(self, staged, task_id, ext)

    monkeypatch.setattr(storage_module.ImageStorage, "place", place_and_probe)
    task = svc.api.create_task(user)
    assert seen == [(task["id"], False)], "the file was placed while its lock was free"
    with psycopg2.connect(svc.module.config.database_url) as after, after.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (LOCK_SPACE, task["id"]))
        assert cur.fetchone()[0], "the lock outlived the creating transaction"


def _run_reconcile(svc) -> dict:
    """``flask reconcile`` (on demand) against the service under test."""
    result = svc.module.app.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --------------------------------------------------------------------------- session limits


@pytest.mark.finding("C2-05", side="fixed")
def test_lock_waits_end_at_lock_timeout_with_503(make_service, inspector):
    svc = make_service(config={"lock_timeout_ms": 300})
    user = svc.api.create_user("a@example.com")
    import psycopg2

    holder = psycopg2.connect(svc.module.config.database_url)
    try:
        with holder.cursor() as cur:  # a transaction that never ends holds the user's row
            cur.execute(f"SELECT id FROM {svc.db.users_table} WHERE id = %s FOR UPDATE", (user["id"],))
        started = time.monotonic()
        r = svc.api.post_task(user)
        waited = time.monotonic() - started
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert 0.3 <= waited < 3, waited
        assert svc.db.tasks() == [] and svc.stored_files() == []
    finally:
        holder.rollback()
        holder.close()
    assert svc.api.post_task(user).status_code == 201


@pytest.mark.finding("C2-05", side="fixed")
def test_statement_timeout_cancels_a_long_statement_with_503(make_service, monkeypatch):
    svc = make_service(config={"statement_timeout_ms": 500})
    user = svc.api.create_user("a@example.com")
    original = peewee.Database.execute_sql

    def slow_total(db, sql, params=None, *a, **k):
        import flask

        if flask.has_request_context() and flask.request.path == "/total_tasks_created" \
                and sql.startswith("SELECT"):
            original(db, "SELECT pg_sleep(30)")
        return original(db, sql, params, *a, **k)

    monkeypatch.setattr(peewee.Database, "execute_sql", slow_total)
    started = time.monotonic()
    r = svc.api.get("/total_tasks_created", user)
    assert r.status_code == 503 and time.monotonic() - started < 5
    monkeypatch.setattr(peewee.Database, "execute_sql", original)
    assert svc.api.get("/total_tasks_created", user).status_code == 200


@pytest.mark.finding("C2-05", side="fixed")
def test_transaction_held_open_is_ended_by_the_server(make_service, monkeypatch, inspector):
    """A request stuck inside its transaction (held after its INSERT) loses the session at
    idle_in_transaction_session_timeout: its locks go with it, and it answers 503."""
    svc = make_service(threads=2, config={"idle_in_transaction_timeout_ms": 500})
    user = svc.api.create_user("a@example.com")
    gate = Gate(timeout=20)
    gate.install(monkeypatch, peewee.Database, "execute_sql",
                 lambda request, db, sql, *a, **k: (request.path == "/tasks"
                                                    and sql.startswith('INSERT INTO "task"')))

    def release_after_the_server_ended_it():
        assert gate.reached.wait(10)
        try:
            inspector.wait_for(lambda: not any(a["state"].startswith("idle in transaction")
                                               for a in inspector.activity()),
                               what="the server ends the idle transaction")
        finally:
            gate.open()

    created, _ = in_threads(lambda: svc.api.post_task(user), release_after_the_server_ended_it)
    assert created.status_code == 503
    assert svc.db.tasks() == [] and svc.stored_files() == []
    assert svc.api.post_task(user).status_code == 201  # the pool recovered


# --------------------------------------------------------------------------- the runner


@pytest.mark.finding("C2-17", side="fixed")
def test_runner_stores_images_under_its_workdir_by_default(make_process, workdir, monkeypatch):
    monkeypatch.delenv("IMAGE_STORAGE_DIR")
    launched_from = runner.ROOT / "storage"
    existed = launched_from.exists()
    proc = make_process("gunicorn", threads=1, storage=False)
    user = proc.api.create_user("a@example.com")
    task = proc.api.create_task(user)
    assert (workdir / "storage" / "task_images" / f"{task['id']}.jpg").read_bytes() == JPEG_4PX
    assert launched_from.exists() == existed
    assert proc.api.get(f"/tasks/{task['id']}/image", user).content == JPEG_4PX
