"""Resumable, exactly-once runs of the redesigned pipeline: the index, the output, and many kills.

The journal tests put the process in each crash window by hand (result committed but not yet in the
output, a partial last line, an output edited behind our back). The kill test runs the real CLI
against a real server and stops it at seeded random moments - ``kill -9`` mostly, Ctrl-C and
``SIGTERM`` sometimes - while the server fails (HTTP 500) for a while in some runs, then finishes the
job and checks that the output holds every input exactly once, classified (the failures were
retried), that no output ever had two lines for one image, and that no run ever removed a complete
final line an earlier run had written (only the tail of retryable failures is replaced).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from case1_support import FIXED_PACKAGE
from workbench.image_corpus import make_images

if sys.version_info < (3, 11):  # the redesigned code runs on today's stack only (CONTRIBUTING)
    pytest.skip("reference/case1/fixed needs Python 3.11", allow_module_level=True)

from reference.case1.fixed.journal import Journal, JournalError  # noqa: E402

KILL_SEED = 20261130
KILLS = 20  # runs stopped at a random moment before the last, uninterrupted one
CONFIG = {"input_dir": "/in", "rotate": True}


def rows(*keys, failed=False):
    return [(key, json.dumps({"path": key.decode(), "n": i}), failed, False) for i, key in enumerate(keys)]


def lines(path):
    return path.read_bytes().decode("utf-8").splitlines()


# --- the journal, crash window by crash window ----------------------------------------------------------------


def test_rows_are_recorded_once_and_the_output_follows_the_index(tmp_path):
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        assert journal.record(rows(b"a", b"b")) == 2
        assert journal.record(rows(b"b", b"c")) == 1  # b is already there: ignored, not duplicated
        assert journal.done([b"a", b"c", b"x"]) == {b"a", b"c"}
    assert [json.loads(line)["path"] for line in lines(out)] == ["a", "b", "c"]


def test_a_result_committed_but_not_written_is_written_on_reopen(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a"))
        monkeypatch.setattr(Journal, "_append_missing", lambda self: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError):
            journal.record(rows(b"b"))  # committed to the index, the output append "crashed"
    monkeypatch.undo()  # (closing could not append it either)
    assert len(lines(out)) == 1
    with Journal(out, CONFIG) as journal:
        assert journal.done([b"b"]) == {b"b"}
    assert [json.loads(line)["path"] for line in lines(out)] == ["a", "b"]


def test_a_partial_last_line_is_cut_and_rewritten(tmp_path):
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a", b"b"))
    whole = out.read_bytes()
    out.write_bytes(whole[:-7])  # the process died in the middle of writing line 2
    with Journal(out, CONFIG):
        pass
    assert out.read_bytes() == whole


def test_lines_beyond_the_index_are_removed(tmp_path):
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a"))
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"path": "ghost"}\n')  # a line no committed row stands for
    with Journal(out, CONFIG):
        pass
    assert out.read_bytes() == whole


def test_an_output_that_disagrees_is_kept_aside_and_rebuilt(tmp_path):
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a", b"b"))
    whole = out.read_bytes()
    out.write_bytes(b"edited by hand\n")
    with Journal(out, CONFIG) as journal:
        aside = journal.set_aside
    assert out.read_bytes() == whole
    assert aside is not None and aside.read_bytes() == b"edited by hand\n"


@pytest.mark.finding("C1-12", side="fixed")
def test_an_output_without_index_settings_that_changed_and_a_second_run_are_refused(tmp_path):
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"path": "x"}\n', encoding="utf-8")
    with pytest.raises(JournalError, match="has no index"):
        Journal(foreign, CONFIG).__enter__()
    assert foreign.read_text(encoding="utf-8") == '{"path": "x"}\n'
    out = tmp_path / "out.jsonl"
    with Journal(out, CONFIG) as journal:
        journal.record(rows(b"a"))
        with pytest.raises(JournalError, match="another run"):
            Journal(out, CONFIG).__enter__()
    with pytest.raises(JournalError, match="other settings"):
        Journal(out, {**CONFIG, "rotate": False}).__enter__()
    with Journal(out, {**CONFIG, "rotate": False}, restart=True) as journal:
        assert journal.totals().results == 0
    assert out.read_bytes() == b""


def test_a_disk_that_fills_up_ends_the_run_cleanly(tmp_path, monkeypatch, capsys, start_server):
    from reference.case1.fixed.cli import EXIT_CANNOT_RECORD, main
    make_images(tmp_path / "in", 3, size=(8, 8), mode="L")
    server = start_server(latency_ms=0, stats_latency_ms=0)

    def full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Journal, "record", full)
    code = main(["--input-dir", str(tmp_path / "in"), "--output", str(tmp_path / "out.jsonl"), "--no-progress",
                 server.url])
    assert code == EXIT_CANNOT_RECORD
    assert "No space left on device" in capsys.readouterr().err


# --- the CLI, killed again and again ------------------------------------------------------------------------------


def _final_part(data: bytes) -> bytes:
    """The complete lines before the tail of retryable failures (see reference/case1/fixed/journal.py)."""
    end = 0
    for line in data[: data.rfind(b"\n") + 1].splitlines(keepends=True):
        if json.loads(line).get("retryable"):
            break
        end += len(line)
    return data[:end]


def _final_lines(path) -> int:
    try:
        with open(path, "rb") as file:
            return _final_part(file.read()).count(b"\n")
    except FileNotFoundError:
        return 0


class _Outage(threading.Thread):
    """Makes the server answer 500 for ``seconds`` once it has classified ``after`` more images."""

    def __init__(self, server, after: int, seconds: float = 0.1):
        super().__init__(daemon=True)
        self.server, self.after, self.seconds = server, after, seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        start = self.server.counters.snapshot()["accepted"]
        while not self.stopping.wait(0.005):
            if self.server.counters.snapshot()["accepted"] >= start + self.after:
                self.server.config.error_status = 500
                self.stopping.wait(self.seconds)
                break
        self.server.config.error_status = 0

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=10)
        self.server.config.error_status = 0


@pytest.mark.finding("C1-12", side="fixed")
def test_killed_many_times_every_input_exactly_once(tmp_path, start_server):
    """Each run is stopped at a seeded random point: half the time at a random moment early in the run
    (start-up, first batch), half the time once a random number of further results are in the output
    (mid-run, wherever the load of the machine puts that moment). In the first two runs and a third of
    the others the server answers 500 for a tenth of a second once it has classified a random number of
    images: the images sent then get retryable failures, which later runs retry."""
    names = [p.name for p in make_images(tmp_path / "in", 100, size=(24, 16), mode="L")]
    server = start_server(latency_ms=25, stats_latency_ms=5)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", FIXED_PACKAGE, "--input-dir", str(tmp_path / "in"), "--output", str(out),
           "--workers", "4", "--timeout", "10", "--no-progress", server.url]
    rng = random.Random(KILL_SEED)
    signals = [signal.SIGKILL] * 4 + [signal.SIGINT, signal.SIGTERM]
    history = []
    for run in range(KILLS):
        before = out.read_bytes() if out.exists() else b""
        done = _final_part(before).count(b"\n")
        sig = rng.choice(signals)
        early = rng.random() < 0.5 or len(names) - done < 2
        target = done + rng.randint(1, max(1, len(names) - done - 1))
        delay = rng.uniform(0.05, 1.0)
        outage = _Outage(server, after=rng.randint(1, 20))
        requests_before = len(server.counters.snapshot()["magic_values"])  # classify requests received so far
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if rng.random() < 1 / 3 or run < 2:  # the first runs have most of the work ahead
            outage.start()
        deadline = time.monotonic() + 60
        if early:
            time.sleep(delay)
        else:
            while proc.poll() is None and _final_lines(out) < target and time.monotonic() < deadline:
                time.sleep(0.005)
        # images of this run whose request had not even reached the server when it was stopped
        unsent = len(names) - done - (len(server.counters.snapshot()["magic_values"]) - requests_before)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        outage.stop()
        after = out.read_bytes() if out.exists() else b""
        # nothing final that an earlier run wrote is ever taken away...
        assert after.startswith(_final_part(before)), (sig, proc.returncode)
        # ...and no output ever has two lines for one image
        paths = [json.loads(line)["path"] for line in after[: after.rfind(b"\n") + 1].splitlines()]
        assert len(paths) == len(set(paths)), (sig, proc.returncode)
        assert b"Traceback" not in err, err.decode()[-2000:]
        retryable = after.count(b'"retryable": true')
        history.append((signal.Signals(sig).name, "early" if early else "mid", proc.returncode, done,
                        _final_part(after).count(b"\n"), retryable, unsent))
    final = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    results = [json.loads(line) for line in lines(out)]
    seen = [os.path.basename(r["path"]) for r in results]
    assert sorted(seen) == sorted(names), history  # every input, exactly once
    assert all(r["class"] and r["error"] is None for r in results)  # the failures were retried
    assert server.counters.snapshot()["accepted"] >= len(names)  # at least once at the server
    # some kill -9 landed in the middle of the work - killed, not finished, with images it had not sent yet - and
    # what that run had finished was kept (results written only at the end would show up only once all were sent)
    assert any(name == "SIGKILL" and code == -signal.SIGKILL and before < after and unsent > 0
               for name, _, code, before, after, _, unsent in history), history
    # and the server failed some requests, whose images were retried by a later run (all are classified)
    assert server.counters.snapshot()["rejected"].get("forced_error"), history
