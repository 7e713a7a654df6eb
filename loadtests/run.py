"""Bounded Locust load runs of the Case 2 services (as given and fixed), on loopback only.

    python loadtests/run.py --out build/loadtests [--full] [--server gunicorn|flask-dev|both]
                            [--service as_given|fixed|both]

For each (service, server) pair: a fresh database on the embedded PostgreSQL (or on
``DATABASE_URL``), the service started by ``workbench.service_runner`` on 127.0.0.1 (gunicorn
gthread with the same threads, or Flask's threaded development server), Locust headless as a
subprocess against it with the same user model and mix (``taskcheck.workloads.MIX``, driven
through a ``taskcheck`` protocol adapter: ``original`` for the service as given, ``fixed`` for the
redesigned one, whose claim endpoint is probed once with a throwaway account: one more user in
its database), then the facts:
throughput, latency, failures by endpoint and by kind, the cause of each 500 from the server
log, duplicate grants, lost counter updates and the connections the service left open. Locust
records every request into a history (``..._history.jsonl`` next to its reports); the figures
about what clients saw, and the anomalies (``checker``), are computed from it by
``taskcheck.checks``, the same checkers ``python -m taskcheck`` runs.

The fixed service is deployed as its README says: its schema is created first by
``flask --app reference.case2.fixed.app init-db``, its images go to ``IMAGE_STORAGE_DIR`` in the
run's work directory. The as-given one creates its tables on its first request.

Writes ``<out>/case2_<service>_<server>.html`` and ``..._*.csv`` (Locust's reports) and
``<out>/case2_load_summary.json`` (``services.<service>.servers.<server>``); logs go to
``<out>/logs/``. The summary is also recorded as ``workbench.results`` ``case2_load`` for the
review. Every process started here (service, schema step, Locust, PostgreSQL) is stopped before
exit, also on an error, Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the workbench importable
    sys.path.insert(0, str(ROOT))

from taskcheck import checks, report  # noqa: E402
from taskcheck.cli import detect_claim  # noqa: E402
from taskcheck.client import Client, RequestsTransport  # noqa: E402
from taskcheck.history import History  # noqa: E402
from taskcheck.protocol import Protocol, resolve  # noqa: E402
from workbench import pg, results  # noqa: E402
from workbench import service_runner as runner  # noqa: E402

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile_case2.py"
APPS = {"as_given": runner.DEFAULT_APP, "fixed": "reference.case2.fixed.app"}
ADAPTERS = {"as_given": "original", "fixed": "fixed"}  # taskcheck protocol of each service
SERVICES = tuple(APPS)
SERVERS = ("gunicorn", "flask-dev")
SCHEMA_STEP_TIMEOUT = 60
MAX_USERS = 100
MAX_RUN_TIME = 120
PROFILES = {"quick": {"users": 10, "run_time": 20}, "full": {"users": 50, "run_time": 60}}
LOCUST_GRACE = 60  # seconds Locust may take beyond --run-time to start, stop and write reports
SETTLE_S = 2.0  # pause between the end of the load and the look at the service's sessions
IDLE_IN_TX = ("idle in transaction", "idle in transaction (aborted)")


# --------------------------------------------------------------------------- arguments


def run_time_seconds(text: str) -> int:
    """'20', '20s', '2m' or '1m30s' -> seconds, within 1..MAX_RUN_TIME."""
    m = re.fullmatch(r"\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 20, 20s, 1m)")
    seconds = int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
    if not 1 <= seconds <= MAX_RUN_TIME:
        raise argparse.ArgumentTypeError(f"run time must be 1..{MAX_RUN_TIME} s, got {seconds} s")
    return seconds


def bounded(kind: type, low: float, high: float):
    """An argparse type: ``kind`` (int or float) within ``low..high``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: "
                                             f"{text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value
    return parse


def loopback_host(text: str) -> str:
    """Only the loopback address the service runner binds is accepted."""
    host = text.strip().lower()
    if host == "localhost":
        return runner.HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"refusing host {text!r}: load runs target the loopback address {runner.HOST} only"
        ) from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(
            f"refusing non-loopback host {text!r}: load runs target {runner.HOST} only")
    if host != runner.HOST:
        raise argparse.ArgumentTypeError(
            f"host {text!r} is loopback, but the service runner binds {runner.HOST} only")
    return host


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python loadtests/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="directory for reports and the summary")
    p.add_argument("--full", action="store_true",
                   help=f"the longer profile ({PROFILES['full']['users']} users, "
                        f"{PROFILES['full']['run_time']} s) instead of the quick one "
                        f"({PROFILES['quick']['users']} users, {PROFILES['quick']['run_time']} s)")
    p.add_argument("--server", choices=SERVERS + ("both",), default="both")
    p.add_argument("--service", choices=SERVICES + ("both",), default="both",
                   help="the as-given service, the fixed one, or both with the same load")
    p.add_argument("--users", type=bounded(int, 1, MAX_USERS), help=f"Locust users, at most {MAX_USERS}")
    p.add_argument("--spawn-rate", type=bounded(float, 0.1, MAX_USERS), help="users started per second")
    p.add_argument("--run-time", type=run_time_seconds, help=f"e.g. 20s or 1m, at most {MAX_RUN_TIME} s")
    p.add_argument("--threads", type=bounded(int, 1, 32), default=4, help="gunicorn gthread threads")
    p.add_argument("--clients-per-account", type=bounded(int, 1, MAX_USERS), default=4,
                   help="Locust users sharing one service user (1: each its own)")
    p.add_argument("--request-timeout", type=bounded(float, 0.5, 30), default=5.0,
                   help="seconds before a request counts as a timeout")
    p.add_argument("--host", type=loopback_host, default=runner.HOST,
                   help=f"address of the service; only {runner.HOST} (loopback) is allowed")
    p.add_argument("--no-record", action="store_true", help="do not write workbench results")
    ns = p.parse_args(argv)
    profile = PROFILES["full" if ns.full else "quick"]
    ns.users = ns.users or profile["users"]
    ns.run_time = ns.run_time or profile["run_time"]
    ns.spawn_rate = min(ns.spawn_rate or max(1.0, ns.users / 2), float(ns.users))
    ns.mode = "full" if ns.full else "quick"
    return ns


# --------------------------------------------------------------------------- processes


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that every ``finally`` runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM then SIGKILL the process group of ``proc``; reap it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_locust(ns, base_url: str, prefix: Path, html: Path, env: dict, log: Path) -> tuple[int, int]:
    """Locust headless in its own process group; (exit code, pid). Bounded in time."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(ns.users), "-r", f"{ns.spawn_rate:g}", "--run-time", f"{ns.run_time}s",
           "--stop-timeout", "2", "--host", base_url, "--csv", str(prefix), "--html", str(html),
           "--only-summary", "--loglevel", "WARNING"]
    print("+", " ".join(cmd), flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                env=env, start_new_session=True)
        try:
            return proc.wait(timeout=ns.run_time + LOCUST_GRACE), proc.pid
        except subprocess.TimeoutExpired:
            print(f"locust did not finish within {ns.run_time + LOCUST_GRACE} s; stopped",
                  file=sys.stderr)
            return -1, proc.pid
        finally:
            stop_group(proc)


# --------------------------------------------------------------------------- facts


_EXC_HEADER = re.compile(r"Exception on (\S+) \[(\w+)\]")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|DoesNotExist|Transaction)\w*)(?::\s*(.*))?$")


def server_exceptions(log_text: str) -> dict:
    """The final exception of each traceback Flask logged, by kind and by endpoint."""
    by_kind, by_endpoint = Counter(), defaultdict(Counter)
    headers = list(_EXC_HEADER.finditer(log_text))
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(log_text)
        last = None
        for line in log_text[h.end():end].splitlines():
            m = _EXC_LINE.match(line)
            if m:
                last = m
        if last is None:
            continue
        message = (last.group(2) or "").split("\n")[0]
        kind = last.group(1)
        if "current transaction is aborted" in message:
            kind += ": current transaction is aborted"
        elif kind.endswith("IndexError"):
            kind += f": {message}"
        endpoint = f"{h.group(2)} {re.sub(r'/[0-9]+', '/[id]', h.group(1))}"
        by_kind[kind] += 1
        by_endpoint[endpoint][kind] += 1
    return {"by_kind": dict(by_kind.most_common()),
            "by_endpoint": {k: dict(v) for k, v in sorted(by_endpoint.items())}}


def connections(admin_url: str, dbname: str) -> dict:
    """Sessions of the service's database by state, and how many wait on a lock."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(state, 'unknown'), count(*), "
                        "count(*) FILTER (WHERE wait_event_type = 'Lock'), "
                        "coalesce(max(extract(epoch FROM now() - xact_start)), 0) "
                        "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                        "GROUP BY 1", (dbname,))
            rows = cur.fetchall()
    finally:
        conn.close()
    by_state = {state: n for state, n, _, _ in rows}
    return {"total": sum(by_state.values()), "by_state": by_state,
            "idle_in_transaction": sum(by_state.get(s, 0) for s in IDLE_IN_TX),
            "waiting_on_lock": sum(w for _, _, w, _ in rows),
            "oldest_transaction_s": round(max([float(x) for *_, x in rows] or [0.0]), 1)}


def postmaster_pid(admin_url: str) -> int | None:
    """The pid of the PostgreSQL server behind ``admin_url`` when it runs on this machine."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW data_directory")
            datadir = Path(cur.fetchone()[0])
        return int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError, psycopg2.Error):
        return None
    finally:
        conn.close()


def connections_after_stop(admin_url: str, dbname: str, timeout: float = 5.0) -> int:
    """Sessions still open once the service is stopped (waits briefly for them to end)."""
    deadline = time.monotonic() + timeout
    while True:
        left = connections(admin_url, dbname)["total"]
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def database_facts(db_url: str, seen: dict, protocol: Protocol) -> dict:
    """Compare what the clients saw with what the database holds (in the tables that the
    service's protocol names: the as-given users table is "user", the fixed one's users)."""
    import psycopg2

    users_table, tasks_table = protocol.deep["users_table"], protocol.deep["tasks_table"]

    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(f"SELECT count(*), coalesce(sum(tasks_number), 0) FROM {users_table}")
                users, counter_sum = cur.fetchone()
                cur.execute(f"SELECT id, free FROM {tasks_table}")
                tasks = dict(cur.fetchall())
                # The fixed service keeps a service-wide counter that only grows (one row);
                # the as-given one reports SUM(tasks_number) as its total.
                cur.execute("SELECT to_regclass('stats') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute("SELECT coalesce(max(tasks_created), 0) FROM stats")
                    total_counter, total_source = int(cur.fetchone()[0]), "stats.tasks_created"
                else:
                    total_counter = int(counter_sum)
                    total_source = "SUM(" + users_table.strip('"') + ".tasks_number)"
            except psycopg2.errors.UndefinedTable:
                return {"tables_created": False}
    finally:
        conn.close()
    granted = {int(k): v for k, v in seen.get("granted", {}).items()}
    # Only tasks whose id the clients knew are ever deleted, so a created task is either
    # still there or one of those the clients tried to delete.
    deleted = set(seen.get("delete_attempted_ids", [])) - tasks.keys()
    created = len(tasks) + len(deleted)
    taken_in_db = {i for i, free in tasks.items() if not free}
    return {
        "tables_created": True,
        "users": users,
        "tasks_now": len(tasks),
        "tasks_deleted": len(deleted),
        "tasks_created": created,
        "tasks_created_acknowledged": len(seen.get("created_ids", [])),
        "sum_tasks_number": int(counter_sum),
        "lost_counter_updates": max(0, created - int(counter_sum)),
        "counter_minus_tasks": int(counter_sum) - created,
        "total_counter": total_counter,
        "total_counter_source": total_source,
        "lost_total_updates": max(0, created - total_counter),
        "taken_in_db": len(taken_in_db),
        "take_responses": seen["takes"]["ok"] if "takes" in seen else 0,
        "distinct_granted": len(granted),
        "granted_but_free_in_db": sum(1 for i in granted if tasks.get(i) is True),
        "taken_without_grant_response": len(taken_in_db - granted.keys()),
    }


SAMPLES_KEPT = 3  # error messages kept per failure kind, to tell what a connection error was


def client_facts(history: History) -> dict:
    """What the clients saw, from the recorded history: failures by kind and endpoint, the
    claim figures, the created and deleted task ids, the list sizes; and the anomalies the
    checkers find (the same ``taskcheck.checks`` as the checker's command)."""
    by_endpoint: dict = defaultdict(Counter)
    samples: dict = defaultdict(list)
    for op in history.ops:
        kind = checks.failure_kind(op)
        if kind is None:
            continue
        endpoint = f"{op.request.get('method')} {op.request.get('endpoint', op.request.get('path'))}"
        endpoint = endpoint.replace("{task_id}", "[id]").replace("{user_id}", "[id]")
        by_endpoint[endpoint][kind] += 1
        if op.error_text and len(samples[kind]) < SAMPLES_KEPT:
            samples[kind].append(f"{endpoint}: {op.error_text}"[:300])
    total = Counter()
    for kinds in by_endpoint.values():
        total.update(kinds)
    result = checks.run(history)
    grants = checks.grant_summary(history)
    lists = history.by_action("list_tasks")
    summary = report.summarise(history, result)
    return {
        "failure_kinds": dict(total.most_common()),
        "failure_kinds_by_endpoint": {k: dict(v) for k, v in sorted(by_endpoint.items())},
        "error_samples": dict(samples),
        "takes": {"ok": grants["ok"], "no_free_task": grants["no_free_task"],
                  "duplicate_grants": result["counts"].get("duplicate-grant", 0),
                  "distinct_tasks": grants["distinct_tasks"]},
        "granted": grants["granted"],
        "created_ids": sorted(op.value["task_id"] for op in history.by_action("create_task")
                              if op.type == "ok" and op.value.get("task_id") is not None),
        "delete_attempted_ids": sorted({op.args["task_id"] for op in history.by_action("delete_task")}),
        "list_items_max": max([op.value.get("items", 0) for op in lists] or [0]),
        "list_bad_shape": sum(1 for op in lists if op.value.get("shape_error")),
        "checker": {"total": summary["total"], "counts": result["counts"], "coverage": result["coverage"],
                    "anomalies": [{"kind": r["kind"], "title": r["title"], "count": r["count"],
                                   "findings": r["findings"], "example": r["examples"][0]}
                                  for r in summary["anomalies"]]},
    }


def resolve_api(service: str, base_url: str, timeout: float) -> str:
    """The adapter for ``service``; the fixed one's claim endpoint is probed (one throwaway
    account, one claim with nothing to claim: nothing else changes)."""
    api = ADAPTERS[service]
    if api != "fixed":
        return api
    transport = RequestsTransport(base_url, timeout)
    try:
        probe = Client(resolve(api), transport, History(), "probe", "setup")
        return detect_claim(probe, uuid.uuid4().hex[:8]).name
    finally:
        transport.close()


# --------------------------------------------------------------------------- one run


def deploy_env(service: str, db_url: str, workdir: Path, log: Path) -> dict[str, str]:
    """The fixed service's deployment steps in ``workdir``: the image directory and the schema
    (``flask init-db``, a bounded subprocess). The environment the server needs is returned;
    the as-given service needs nothing (it creates its tables on the first request)."""
    if service != "fixed":
        return {}
    extra = {"IMAGE_STORAGE_DIR": str(workdir / "storage" / "task_images")}
    env = dict(os.environ, **extra, DATABASE_URL=db_url)
    with open(log, "wb") as out:  # ``-m`` from ROOT: the service package is importable
        subprocess.run([sys.executable, "-m", "flask", "--app", APPS[service], "init-db"],
                       cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT,
                       timeout=SCHEMA_STEP_TIMEOUT, check=True)
    return extra


def run_one(ns, service: str, server: str, admin_url: str, out: Path, logs: Path,
            scratch: Path) -> dict:
    key = f"{service}_{server.replace('-', '_')}"
    tag = f"case2_{key}"
    dbname = f"load_{key}_{uuid.uuid4().hex[:8]}"
    db_url = pg.create_database(admin_url, dbname)
    started = time.monotonic()
    try:
        workdir = runner.prepare_workdir(scratch / service / server / "work")
        server_env = deploy_env(service, db_url, workdir, logs / f"{tag}_init_db.log")
        counters_path = logs / f"{tag}_locust_facts.json"
        history_path = out / f"{tag}_history.jsonl"
        for stale in (counters_path, history_path):
            stale.unlink(missing_ok=True)
        srv = runner.SubprocessServer(server, db_url, workdir, app=APPS[service],
                                      threads=ns.threads, log_path=logs / f"{tag}_server.log")
        # The service runner passes this process's environment to the server it starts.
        with mock.patch.dict(os.environ, server_env), srv:
            api = resolve_api(service, srv.base_url, ns.request_timeout)
            env = dict(os.environ, CASE2_API=api,
                       CASE2_CLIENTS_PER_ACCOUNT=str(ns.clients_per_account),
                       CASE2_REQUEST_TIMEOUT=str(ns.request_timeout),
                       CASE2_RUN_TOKEN=uuid.uuid4().hex[:8], CASE2_COUNTERS_OUT=str(counters_path),
                       CASE2_HISTORY_OUT=str(history_path), PYTHONUNBUFFERED="1")
            code, locust_pid = run_locust(ns, srv.base_url, out / tag, out / f"{tag}.html", env,
                                          logs / f"{tag}_locust.log")
            # Let requests the stopped clients left in flight finish, then look at the
            # sessions the service still holds: what remains open now stays open.
            time.sleep(SETTLE_S)
            during = connections(admin_url, dbname)
            server_pgid = srv.proc.pid
        left_after_stop = connections_after_stop(admin_url, dbname)
        facts = json.loads(counters_path.read_text(encoding="utf-8")) if counters_path.is_file() else {}
        seen = client_facts(History.read(history_path) if history_path.is_file() else History())
        stats = facts.get("stats") or {"total": {}, "endpoints": {}}
        total = stats["total"]
        protocol = resolve(api)
        return {
            "service": service, "app": APPS[service], "server": server, "api": api,
            "claim_endpoint": f"{protocol.claim.method} {protocol.claim.path}",
            "threads": ns.threads if server == "gunicorn" else None,
            "users": ns.users, "spawn_rate": ns.spawn_rate, "run_time_s": ns.run_time,
            "clients_per_account": ns.clients_per_account, "accounts": facts.get("accounts"),
            "wait_s": facts.get("wait_s"),
            "request_timeout_s": ns.request_timeout,
            "locust_exit_code": code,
            "requests": total.get("requests", 0), "failures": total.get("failures", 0),
            "failure_ratio": total.get("failure_ratio", 0.0), "rps": total.get("rps", 0.0),
            "latency_ms": {k: total.get(f"{k}_ms", 0.0) for k in ("p50", "p95", "p99", "max")},
            "endpoints": stats["endpoints"],
            "failure_kinds": seen["failure_kinds"],
            "failure_kinds_by_endpoint": seen["failure_kinds_by_endpoint"],
            "error_samples": seen["error_samples"],
            "server_exceptions": server_exceptions(srv.log_path.read_text(encoding="utf-8",
                                                                           errors="replace")),
            "takes": seen["takes"],
            "signup_failures": facts.get("signup_failures", 0),
            "list_items_max": seen["list_items_max"],
            "list_bad_shape": seen["list_bad_shape"],
            "database": database_facts(db_url, seen, protocol),
            "checker": seen["checker"],
            "connections": {"after_load": during, "settle_s": SETTLE_S, "after_stop": left_after_stop,
                            "server_process_group_left": group_alive(server_pgid)},
            "reports": {"html": f"{tag}.html", "stats_csv": f"{tag}_stats.csv",
                        "failures_csv": f"{tag}_failures.csv", "history": history_path.name},
            "pids": {"server": server_pgid, "locust": locust_pid},
            "wall_time_s": round(time.monotonic() - started, 1),
        }
    finally:
        pg.drop_database(admin_url, dbname)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    out = ns.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    servers = SERVERS if ns.server == "both" else (ns.server,)
    services = SERVICES if ns.service == "both" else (ns.service,)
    summary = {"mode": ns.mode, "host": ns.host,
               "database": "DATABASE_URL" if os.environ.get(pg.ENV_VAR) else "embedded",
               "services": {s: {"app": APPS[s], "servers": {}} for s in services}, "errors": {}}
    started = time.monotonic()
    try:
        with pg.database_url() as admin_url, tempfile.TemporaryDirectory(prefix="case2-load-") as tmp:
            if summary["database"] == "embedded":
                summary["postgres_pid"] = postmaster_pid(admin_url)
            for service in services:
                for server in servers:
                    print(f"== load run: {service} on {server}, {ns.users} users, {ns.run_time} s",
                          flush=True)
                    try:
                        summary["services"][service]["servers"][server] = run_one(
                            ns, service, server, admin_url, out, logs, Path(tmp))
                    except Exception as exc:  # one failing run must not hide the others' figures
                        summary["errors"][f"{service}/{server}"] = f"{type(exc).__name__}: {exc}"
                        print(f"load run {service} on {server} failed: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, Terminated):
        print("interrupted; every started process was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary["wall_time_s"] = round(time.monotonic() - started, 1)
    (out / "case2_load_summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    runs = [r for s in summary["services"].values() for r in s["servers"].values()]
    if not ns.no_record and runs:
        results.record("case2_load", summary)
    for r in runs:
        print(f"{r['service']} on {r['server']}: {r['requests']} requests, {r['rps']} req/s, "
              f"p95 {r['latency_ms']['p95']} ms, "
              f"failures {r['failure_ratio']:.1%} {r['failure_kinds']}, "
              f"duplicate grants {r['takes']['duplicate_grants']}, "
              f"lost counter updates {r['database'].get('lost_counter_updates')} "
              f"(total counter: {r['database'].get('lost_total_updates')}), "
              f"idle in transaction {r['connections']['after_load']['idle_in_transaction']}, "
              f"checker anomalies {r['checker']['counts']}",
              flush=True)
    return 1 if summary["errors"] or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
