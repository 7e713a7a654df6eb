#!/usr/bin/env python3
"""Processes a CI run left running: only this run's, whatever else runs on the machine.

    WORKBENCH_CI_RUN=<id> make test            # every process the run starts inherits the mark
    python3 .ci/leftovers.py --run-id <id>     # exit 1 listing the marked processes still alive

A process belongs to the run when its environment holds ``WORKBENCH_CI_RUN=<id>``. The mark is
inherited by every descendant, also by those that leave the run's process group or session:
gunicorn started with ``start_new_session``, PostgreSQL daemonised by ``pg_ctl``. Matching names
instead (postgres, gunicorn) would also catch another project's servers on the same machine;
matching the process group would miss the daemonised ones. Linux only (``/proc``); standard
library only, so it runs with any Python 3.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

MARK = "WORKBENCH_CI_RUN"


def marked(run_id: str, proc: str = "/proc") -> list:
    """(pid, command line) of every process whose environment holds ``MARK=run_id``."""
    wanted = f"{MARK}={run_id}".encode()
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"{proc}/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            if wanted not in environ:
                continue
            with open(f"{proc}/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:  # gone meanwhile, or another user's process: not ours
            continue
        if cmdline:  # zombies have none: they are not running
            found.append((int(name), cmdline))
    return sorted(found)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=".ci/leftovers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help=f"the value of {MARK} the run was started with")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds to wait for processes that are still exiting")
    ns = parser.parse_args(argv)
    if not os.path.isdir("/proc/self"):
        print("leftovers: needs Linux /proc to read process environments", file=sys.stderr)
        return 2
    deadline = time.monotonic() + ns.grace
    left = marked(ns.run_id)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked(ns.run_id)
    if left:
        print(f"processes of this run ({MARK}={ns.run_id}) left running:", file=sys.stderr)
        for pid, cmdline in left:
            print(f"  {pid} {cmdline[:300]}", file=sys.stderr)
        return 1
    print(f"no process of this run ({MARK}={ns.run_id}) left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
