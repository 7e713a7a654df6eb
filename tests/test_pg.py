"""The embedded PostgreSQL: URLs, databases, the command line, and nothing left running."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import psutil
import psycopg2
import pytest

from workbench import pg


def _socket_dir(url: str) -> str:
    return parse_qs(urlsplit(url).query)["host"][0]


def _postgres_processes_for(datadir_hint: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "postgres" in (p.info["name"] or "") and datadir_hint in cmd \
                    and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != pg.ENV_VAR}
    env.update(extra)
    return env


def test_fresh_database_is_empty_and_separate(database_url, fresh_database_url):
    assert fresh_database_url != database_url
    with psycopg2.connect(fresh_database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), count(*) FROM pg_tables WHERE schemaname='public'")
        name, tables = cur.fetchone()
    conn.close()
    assert name == urlsplit(fresh_database_url).path.lstrip("/")
    assert tables == 0


def _state(url: str) -> dict:
    """What a test could see of a database: objects, schemas, public's owner and privileges,
    the session defaults it starts with, other sessions."""
    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'")
        objects = cur.fetchone()[0]
        cur.execute("SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace "
                    "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'")
        schemas = cur.fetchone()[0]
        cur.execute("SELECT nspowner::regrole::text, nspacl::text FROM pg_namespace WHERE nspname = 'public'")
        public = cur.fetchone()
        cur.execute("SHOW default_transaction_isolation")
        isolation = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()")
        others = cur.fetchone()[0]
    return {"objects": objects, "schemas": schemas, "public": public, "isolation": isolation,
            "other_sessions": others}


def test_a_reused_database_is_as_empty_as_a_new_one(database_url):
    databases = pg.EmptyDatabases(database_url, prefix="reuse_")
    try:
        url = databases.take()
        new = _state(url)
        assert new["objects"] == 0 and new["schemas"] == ["public"] and new["other_sessions"] == 0
        # A test leaves everything it can behind: tables, a schema, a setting, a session.
        left = psycopg2.connect(url)
        left.autocommit = True
        with left.cursor() as cur:
            cur.execute('CREATE TABLE "user" (id serial PRIMARY KEY); CREATE SCHEMA extra; '
                        "CREATE TABLE extra.t (x int); REVOKE ALL ON SCHEMA public FROM PUBLIC")
            cur.execute("SELECT current_database()")
            cur.execute(f'ALTER DATABASE "{cur.fetchone()[0]}" SET default_transaction_isolation '
                        "TO 'serializable'")
        databases.give_back(url)
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
            left.cursor().execute("SELECT 1")  # its session was ended
        left.close()
        again = databases.take()
        assert again == url  # reused, not created
        assert _state(again) == new
        databases.give_back(again)
    finally:
        databases.close()
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'reuse\\_%'")
        assert cur.fetchone()[0] == 0  # close() dropped them


@pytest.mark.parametrize("name", ["x; DROP", "1abc", "a" * 64, "with space"])
def test_unsafe_database_names_are_refused(database_url, name):
    with pytest.raises(ValueError, match="not a safe database name"):
        pg.create_database(database_url, name)


def test_database_url_env_var_wins(monkeypatch):
    monkeypatch.setenv(pg.ENV_VAR, "postgresql://someone@db.invalid/x")
    with pg.database_url() as url:
        assert url == "postgresql://someone@db.invalid/x"


def test_run_sets_database_url_and_stops_the_server():
    out = subprocess.run(
        [sys.executable, "-m", "workbench.pg", "run", "--", sys.executable, "-c",
         "import os, psycopg2; u = os.environ['DATABASE_URL']; psycopg2.connect(u).close(); print(u)"],
        env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql://")
    assert _postgres_processes_for(_socket_dir(url)) == []


def test_run_without_a_command_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "workbench.pg", "run"], env=_clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "nothing to run" in out.stderr


def test_serve_prints_url_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "workbench.pg", "serve"], env=_clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        conn = psycopg2.connect(url, connect_timeout=10)
        conn.close()
        assert _postgres_processes_for(_socket_dir(url)), "server should be running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert _postgres_processes_for(_socket_dir(url)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_run_keeps_later_double_dashes_of_the_command(monkeypatch):
    monkeypatch.setenv(pg.ENV_VAR, "postgresql://someone@db.invalid/x")  # no server needed
    out = subprocess.run(
        [sys.executable, "-m", "workbench.pg", "run", "--", sys.executable, "-c",
         "import sys; print(sys.argv[1:])", "--", "x"],
        env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['--', 'x']"


def test_embedded_servers_start_and_stop_in_two_threads_at_once():
    """The 2020-stack run starts its own server beside the test session's, in another thread
    of the same process; pgserver's class-wide inter-process lock is not thread-safe, and the
    second thread's start or cleanup failed with "Unable to release an unaquired lock"."""
    import threading

    barrier = threading.Barrier(2, timeout=30)
    outcomes = []

    def start_and_stop():
        try:
            barrier.wait()
            with pg.embedded_server() as url:
                psycopg2.connect(url, connect_timeout=10).close()
                barrier.wait()  # both are up before either stops
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=start_and_stop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcomes == ["ok", "ok"]


@pytest.mark.parametrize("how", ["serve, terminal closed (SIGHUP)", "run, SIGTERM", "run, SIGHUP"])
def test_serve_and_run_stop_the_server_however_they_are_ended(how):
    """Closing the terminal sends SIGHUP, whose default action ended ``serve`` at once and left
    PostgreSQL running on its directory; ``run`` left it likewise on SIGTERM. Each is now
    passed on (to the command, for ``run``) and ends with the server stopped, its directory
    gone."""
    sig = signal.SIGHUP if "SIGHUP" in how else signal.SIGTERM
    if how.startswith("serve"):
        cmd = [sys.executable, "-m", "workbench.pg", "serve"]
    else:
        cmd = [sys.executable, "-m", "workbench.pg", "run", "--", sys.executable, "-c",
               "import os, time; print(os.environ['DATABASE_URL'], flush=True); time.sleep(60)"]
    proc = subprocess.Popen(cmd, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    socket_dir = None
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("postgresql://"), url
        socket_dir = _socket_dir(url)
        assert _postgres_processes_for(socket_dir)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert _postgres_processes_for(socket_dir) == []
        assert not os.path.exists(socket_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if socket_dir is not None:  # never leave a server behind, even when the test failed
            for process in _postgres_processes_for(socket_dir):
                with contextlib.suppress(psutil.Error):
                    process.kill()
