"""The command: run bounded workloads against a task service, record the history, check it,
write the report.

    python -m taskcheck --url http://127.0.0.1:8080 --api original|fixed|fixed-take|MAPPING
    python -m taskcheck --serve reference.case2.fixed.app --server gunicorn --api fixed \
                        --faults kill-worker,pg-restart,disk-full
    python -m taskcheck --replay OUT/history.jsonl

Writes ``OUT/history.jsonl`` (every request and response, replayable), ``OUT/report.md``,
``OUT/report.html`` and ``OUT/result.json``. Exit status: 0 nothing found, 1 anomalies found,
2 bad arguments or a target refused, 3 nothing found but some check had nothing to check.

Safety: requests go only to a loopback address, or to a host named with ``--allow-host``;
requests, concurrency and time are bounded (``--max-requests``, ``--concurrency``,
``--time-limit``, ``--request-timeout``); redirects are never followed.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlsplit

from . import __version__, checks, deep, report, workloads
from .client import Budget, BudgetExhausted, Client, RequestsTransport
from .history import History
from .protocol import BUILTIN, MappingError, Protocol, resolve

EXIT_CLEAN, EXIT_ANOMALIES, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
LIMITS = {"max_requests": 20000, "concurrency": 64, "time_limit": 900, "request_timeout": 60}
DEFAULT_OUT = Path("build/taskcheck")
FAULT_GRACE_S = 1.0  # after healing, the service gets this long before requests must succeed


class Refused(Exception):
    """The target or an argument is not allowed; nothing was sent."""


def check_target(url: str, allowed: List[str]) -> str:
    """``url`` when its host is a loopback address or one of ``allowed``; Refused otherwise.
    Names are not resolved: only ``localhost`` and literal addresses count as loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not accepted")
    if parts.query or parts.fragment:
        raise Refused("give the service's base URL, without a query or fragment")
    host = parts.hostname.lower()
    if host in (h.lower().strip("[]") for h in allowed):
        return url.rstrip("/")
    if host == "localhost":
        return url.rstrip("/")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return url.rstrip("/")
    except ValueError:
        pass
    raise Refused(f"refusing {host!r}: only loopback addresses are targeted unless the host is "
                  f"named with --allow-host {host}")


def _bounded(kind: type, low: float, high: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value
    return parse


def _statuses(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"statuses as 204 or 204,404: {text!r}") from None
    if not values or not all(200 <= v <= 499 for v in values):
        raise argparse.ArgumentTypeError(f"statuses must be 2xx or 4xx: {text!r}")
    return values


def _names(choices, what: str):
    def parse(text: str) -> List[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown}: choose from {', '.join(choices)}")
        return names
    return parse


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from .faults import FAULTS

    p = argparse.ArgumentParser(prog="python -m taskcheck",
                                description="Black-box checker of a Case 2 task service: bounded "
                                            "workloads over HTTP, a recorded history, pure checkers, "
                                            "a report (Markdown, HTML).",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="exit status: 0 nothing found, 1 anomalies, 2 refused, "
                                       "3 inconclusive (a check had nothing to check)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="base URL of the service (loopback unless --allow-host)")
    target.add_argument("--serve", metavar="APP", help="start this app module under the workbench's "
                        "runner instead (needed for --faults)")
    target.add_argument("--replay", type=Path, metavar="HISTORY", help="re-run only the checkers on a history")
    p.add_argument("--api", default="original",
                   help=f"{', '.join(BUILTIN)} or a mapping file (YAML/JSON); default original")
    p.add_argument("--claim", metavar="'METHOD /path'", help="override the claim endpoint")
    p.add_argument("--none-free", type=_statuses, metavar="STATUSES",
                   help="statuses meaning 'no free task' (e.g. 204 or 404)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="also allow this (non-loopback) host; repeatable")
    p.add_argument("--workloads", type=_names(workloads.WORKLOADS, "workload"),
                   default=list(workloads.WORKLOADS), help=f"comma-separated, default all: "
                   f"{','.join(workloads.WORKLOADS)}")
    p.add_argument("--concurrency", type=_bounded(int, 2, LIMITS["concurrency"]), default=8,
                   help="clients released together in a burst")
    p.add_argument("--rounds", type=_bounded(int, 1, 200), default=6, help="rounds of the race bursts")
    p.add_argument("--mix-ops", type=_bounded(int, 1, 10000), default=120,
                   help="requests of the mixed workload, all clients together")
    p.add_argument("--max-requests", type=_bounded(int, 10, LIMITS["max_requests"]), default=4000,
                   help="no request is sent beyond this many")
    p.add_argument("--time-limit", type=_bounded(float, 1, LIMITS["time_limit"]), default=180.0,
                   help="seconds; no request starts after it")
    p.add_argument("--request-timeout", type=_bounded(float, 0.2, LIMITS["request_timeout"]), default=5.0,
                   help="seconds; an answer not there by then is indeterminate")
    p.add_argument("--hang-threshold", type=_bounded(float, 0.1, 600), default=None,
                   help="an answer slower than this is a hang (default: the request timeout)")
    p.add_argument("--database-url", help="deep checks: the service's database")
    p.add_argument("--image-dir", type=Path, help="deep checks: the service's image folder")
    p.add_argument("--server", choices=("gunicorn", "flask-dev"), default="gunicorn", help="with --serve")
    p.add_argument("--threads", type=_bounded(int, 1, 32), default=4, help="gunicorn threads, with --serve")
    p.add_argument("--faults", type=_names(FAULTS, "fault"), default=[], help=f"with --serve: {','.join(FAULTS)}")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--record", metavar="NAME", help="also record the summary as workbench result NAME")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    if ns.faults and not ns.serve:
        p.error("--faults needs --serve (the faults are done to a service the checker runs)")
    if ns.image_dir is not None and not ns.image_dir.is_dir():
        p.error(f"--image-dir: not a directory: {ns.image_dir}")
    if ns.hang_threshold is None:
        ns.hang_threshold = ns.request_timeout
    return ns


# --------------------------------------------------------------------------- the run


def detect_claim(client: Client, run_token: str) -> Protocol:
    """The redesigned API's claim is ``POST /tasks/claim`` (204 when nothing is free); a fixed
    service from before that answers on ``POST /take_free_task`` (404). An account with no
    task tells them apart without changing anything: only the new endpoint answers 204."""
    probe = workloads.sign_up(client, "probe", run_token)
    if probe is None:
        raise workloads.WorkloadError("could not create an account to probe the claim endpoint")
    op = client.claim(probe, args={"probe": True})
    if op.status == 204:
        return client.protocol
    client.history.event("note", text=f"{client.protocol.claim} answered {op.status} for an account "
                         "with no task: using the earlier claim, POST /take_free_task (404 when none free)")
    return resolve("fixed-take")


def _say(ns, text: str) -> None:
    if not ns.quiet:
        print(text, file=sys.stderr, flush=True)


def _run_workloads(ns, ctx: workloads.Context, names: List[str], history: History) -> Optional[str]:
    for name in names:
        _say(ns, f"taskcheck: workload {name}")
        try:
            workloads.WORKLOADS[name](ctx)
        except BudgetExhausted as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken workload must not lose the history
            text = f"workload {name} stopped: {type(exc).__name__}: {exc}"
            history.event("note", text=text)
            history.meta.setdefault("workload_errors", []).append(text)
    return None


def _fault_round(ns, fault: str, served, base: Client, params: workloads.Params, history: History,
                 image_dir: Optional[Path]) -> None:
    """Inject one fault while a short workload runs, heal it, give the service its grace, then
    run the same workload again and take a snapshot: the same checks judge every phase."""
    from .faults import FaultUnavailable

    small = replace(params, rounds=2, concurrency=min(params.concurrency, 4))
    names = ["claims", "counter"]

    def phase_ctx(phase: str) -> workloads.Context:
        return workloads.Context(base.fork(phase, phase=f"{phase}:{fault}"), small,
                                 prefix=f"{fault}.{phase}.")

    history.event("nemesis", fault=fault, phase="start")
    ctx = phase_ctx("during")
    try:
        if fault == "kill-worker":
            import threading

            done = threading.Event()
            worker = threading.Thread(target=lambda: (_run_workloads(ns, ctx, ["counter"], history),
                                                      done.set()), daemon=True)
            worker.start()
            time.sleep(0.3)
            detail = served.kill_worker()
            served.wait_ready()
            worker.join(timeout=ns.time_limit)
        elif fault == "pg-restart":
            detail = served.restart_pg()
            _run_workloads(ns, ctx, names, history)
        else:
            detail = served.fill_disk()
            _run_workloads(ns, ctx, names, history)
            served.free_disk()
    except FaultUnavailable as exc:
        history.event("nemesis", fault=fault, phase="stop", recover_s=0.0, unavailable=str(exc))
        history.event("note", text=f"fault {fault} unavailable: {exc}")
        return
    finally:
        ctx.close()
    history.event("nemesis", fault=fault, phase="stop", recover_s=FAULT_GRACE_S, detail=detail)
    time.sleep(FAULT_GRACE_S)
    ctx = phase_ctx("after")
    try:
        _run_workloads(ns, ctx, names, history)
    finally:
        ctx.close()
    if ns.database_url or image_dir:
        deep.record(history, f"after:{fault}", ns.database_url, image_dir, base.protocol.deep)


def run(ns: argparse.Namespace) -> dict:
    """Run the workloads against the target; returns the checked summary."""
    out: Path = ns.out
    url = check_target(ns.url, ns.allow_host) if ns.url else None  # refused before anything is done
    protocol = resolve(ns.api, ns.claim, ns.none_free)
    out.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    with stack:
        served = None
        image_dir = ns.image_dir
        if ns.serve:
            from .faults import ServedService

            served = stack.enter_context(ServedService(ns.serve, ns.server, ns.threads, ns.database_url,
                                                       tuple(ns.faults), log_dir=out))
            url = served.base_url
            ns.database_url = served.database_url
            image_dir = served.image_dir
        params = workloads.Params(concurrency=ns.concurrency, rounds=ns.rounds, mix_ops=ns.mix_ops,
                                  seed=ns.seed)
        meta = {"target": url, "api": protocol.name, "api_source": ns.api, "protocol": protocol.describe(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "workloads": list(ns.workloads), "params": vars(params),
                "limits": {"max_requests": ns.max_requests, "time_limit_s": ns.time_limit,
                           "request_timeout_s": ns.request_timeout},
                "hang_threshold_s": ns.hang_threshold, "faults": list(ns.faults),
                "served": {"app": ns.serve, "server": ns.server} if ns.serve else None,
                "versions": {"taskcheck": __version__, "python": platform.python_version()}}
        history = History(meta, out / "history.jsonl")
        stack.callback(history.close)
        budget = Budget(ns.max_requests, history.now() + ns.time_limit, history.now)
        transport = RequestsTransport(url, ns.request_timeout, budget)
        stack.callback(transport.close)
        base = Client(protocol, transport, history, "setup", "setup")
        ctx = workloads.Context(base, params)
        stack.callback(ctx.close)
        stopped = None
        try:
            if ns.api == "fixed" and not ns.claim and ns.none_free is None:
                base.protocol = detect_claim(base, ctx.run_token)
                history.meta.update(api=base.protocol.name, protocol=base.protocol.describe())
            stopped = _run_workloads(ns, ctx, ns.workloads, history)
            if not stopped and (ns.database_url or image_dir):
                deep.record(history, "after the workloads", ns.database_url, image_dir, base.protocol.deep)
            for fault in ns.faults if not stopped else ():
                _say(ns, f"taskcheck: fault {fault}")
                _fault_round(ns, fault, served, base, params, history, image_dir)
                if budget.exhausted:
                    stopped = "request or time limit reached during the faults"
                    break
        except BudgetExhausted as exc:
            stopped = str(exc)
        except workloads.WorkloadError as exc:
            history.event("note", text=f"stopped: {exc}")
        history.meta["stopped_early"] = stopped
        history.meta["requests_sent"] = budget.used
        history.finish()
    return finish(history, out, ns)


def finish(history: History, out: Path, ns: argparse.Namespace) -> dict:
    """Check the history, write the report files, optionally record the summary."""
    summary = report.summarise(history)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report.markdown(summary), encoding="utf-8", errors="backslashreplace")
    (out / "report.html").write_text(report.html_page(summary), encoding="utf-8", errors="backslashreplace")
    (out / "result.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    if getattr(ns, "record", None):
        from workbench import results

        results.record(ns.record, summary)
    return summary


def exit_status(summary: dict) -> int:
    if summary["total"]:
        return EXIT_ANOMALIES
    return EXIT_INCONCLUSIVE if summary["warnings"] else EXIT_CLEAN


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(argv)
    try:
        if ns.replay is not None:
            if not ns.replay.is_file():
                raise Refused(f"no such history: {ns.replay}")
            try:
                history = History.read(ns.replay)
            except ValueError as exc:
                raise Refused(str(exc)) from None
            if not any(a == "--out" or a.startswith("--out=") for a in argv):
                ns.out = ns.replay.parent  # the report goes next to the history it reads
            summary = finish(history, ns.out, ns)
        else:
            summary = run(ns)
    except (Refused, MappingError) as exc:
        print(f"taskcheck: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not ns.quiet:
        print(f"taskcheck: {summary['total']} anomalies "
              + (json.dumps(summary["counts"]) if summary["counts"] else "")
              + (f"; warnings: {summary['warnings']}" if summary["warnings"] else ""), file=sys.stderr)
        print(f"taskcheck: report in {ns.out}/report.md", file=sys.stderr)
    return exit_status(summary)
