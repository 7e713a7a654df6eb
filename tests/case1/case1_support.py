"""Helpers for the Case 1 evidence: the script variants, running them, and seeing swallowed exceptions."""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
AS_GIVEN = ROOT / "reference" / "case1" / "as_given" / "process_images.py"
PATCHED = ROOT / "reference" / "case1" / "patched" / "process_images.py"
FIXED_PACKAGE = "reference.case1.fixed"
FAILURE_MESSAGE = "Connection to classification API failed"
CLI_TIMEOUT = 120


def variant_source(fixes: set[str], as_given: Path = AS_GIVEN, patched: Path = PATCHED) -> str:
    """The as-given source with only the patched file's hunks tagged ``PATCH <id>`` for ``fixes``.

    Besides those, only comment-only hunks (its header) come from the patched file; the real
    ``send_stats`` body is a patch like the others (``PATCH C1-11``). Every other line is the
    as-given file's, so a change made to the as-given code (a declared mutant in a scratch copy)
    reaches every variant built from it. This lets a test show a defect that lies behind earlier
    ones, with nothing else changed.
    """
    old = as_given.read_text(encoding="utf-8").splitlines(keepends=True)
    new = patched.read_text(encoding="utf-8").splitlines(keepends=True)
    out, seen = [], set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        ids = set(re.findall(r"PATCH (C1-\d\d)", "".join(new[j1:j2])))
        seen |= ids
        if tag == "equal":
            take_patched = False
        elif ids:
            take_patched = ids <= fixes
        else:
            take_patched = _is_comment_only(old[i1:i2] + new[j1:j2])
        out += new[j1:j2] if take_patched else old[i1:i2]
    unknown = fixes - seen
    assert not unknown, f"the patched variant has no patch for {sorted(unknown)}"
    return "".join(out)


def _is_comment_only(lines: list[str]) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in lines)


def write_variant(dest_dir: Path, *fixes: str) -> Path:
    path = Path(dest_dir) / "process_images_variant.py"
    path.write_text(variant_source(set(fixes)), encoding="utf-8")
    return path


def load_module(path: Path, name: str | None = None) -> types.ModuleType:
    """Import a script file as a fresh module object."""
    spec = importlib.util.spec_from_file_location(name or f"c1_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: Path, *args: str, cwd: Path, dev_mode: bool = False,
               timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a Case 1 script as the CLI it is, in ``cwd`` (where its output.json lands)."""
    cmd = [sys.executable, *(["-X", "dev"] if dev_mode else []), str(script), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def swallowed(func, *args, **kwargs):
    """Call ``func`` and return (its result, the exceptions that passed through its own frame).

    The as-given ``process_image`` hides every error behind one message; tracing the frame shows
    which exception really happened without changing the code under test.
    """
    code, caught = func.__code__, []

    def local(frame, event, arg):
        if event == "exception" and not any(e is arg[1] for e in caught):
            caught.append(arg[1])
        return local

    def global_trace(frame, event, arg):
        return local if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(global_trace)
    try:
        result = func(*args, **kwargs)
    finally:
        sys.settrace(previous)
    return result, caught


def args_namespace(url: str, skip_rotation: bool = False, skip_resize: bool = False, **extra):
    """What argparse would give ``process_image``."""
    return types.SimpleNamespace(url=url, skip_rotation=skip_rotation, skip_resize=skip_resize, **extra)


def not_image_lines(stdout: str) -> list[str]:
    return [line[: -len(" is not an image")] for line in stdout.splitlines() if line.endswith(" is not an image")]


def exact_magic(image: np.ndarray):
    """The magic-number formula in exact integers; one number per channel of a colour image."""
    rows = np.arange(1, image.shape[0] + 1, dtype=np.int64)
    cols = np.arange(1, image.shape[1] + 1, dtype=np.int64)
    wide, n = image.astype(np.int64), image.shape[0] * image.shape[1]
    if wide.ndim == 2:
        return int(rows @ wide @ cols) / n
    return [int(rows @ wide[..., c] @ cols) / n for c in range(wide.shape[2])]


def as_nobody(func):
    """Run ``func()`` in a forked child that has dropped root to ``nobody``; (exit code, stderr). The
    exit code is what ``func`` returned (an int), raised (``SystemExit``), or 0.

    The interpreter and every module it needs are already loaded before the fork, so the child
    needs no file that ``nobody`` cannot read: only the directory under test matters.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 99
        try:
            sys.stderr = os.fdopen(write_end, "w")  # argparse writes to sys.stderr (pytest's capture here)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                returned = func()
                code = returned if isinstance(returned, int) else 0
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err
