"""The task's 2020 stack stays usable: its lock agrees with its list, each stack runs the versions
its lock pins, and the code the 2020 run imports stays Python 3.8 code.

The 2020 run itself is the full check (it collects every test module and imports every workbench
module under Python 3.8); the static check here keeps the rule visible where Python 3.8 is not
available: syntax newer than 3.8, a module without ``from __future__ import annotations``, and the
3.9+ runtime APIs the code base is most tempted by.
"""
from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path

import pytest

from workbench import stacks

ROOT = Path(__file__).resolve().parent.parent
# Code the 2020 run imports: the evidence, the plumbing, and the programs it runs there.
PY38_TREES = ("tests", "workbench", "benchmarks", "reference/case1/as_given", "reference/case1/patched",
              "reference/case2/as_given")
# Our modules (not the reconstructions, which mirror the original's imports) need the future import.
FUTURE_TREES = ("tests", "workbench", "benchmarks")
NEWER_ATTRIBUTES = {  # attribute -> the Python that added it
    "removeprefix": "3.9", "removesuffix": "3.9", "unparse": "3.9", "is_relative_to": "3.9",
    "with_stem": "3.9", "to_thread": "3.9", "cache": "3.9 (functools.cache)", "pairwise": "3.10",
    "batched": "3.12", "UTC": "3.11 (datetime.UTC)",
}
NEWER_KEYWORDS = {"strict": "3.10 (zip(strict=))", "cancel_futures": "3.9", "slots": "3.10 (dataclass)",
                  "kw_only": "3.10 (dataclass)"}
GENERIC_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = version.strip() or None
    return pins


def _sources(trees) -> list[Path]:
    return sorted(p for tree in trees for p in (ROOT / tree).rglob("*.py") if "__pycache__" not in p.parts)


def _annotation_nodes(tree: ast.AST) -> set:
    """Nodes inside annotations (not evaluated under ``from __future__ import annotations``)."""
    inside = set()
    for node in ast.walk(tree):
        roots = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots.append(node.returns)
            args = node.args
            roots += [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs]
            roots += [a.annotation for a in (args.vararg, args.kwarg) if a is not None]
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        for root in filter(None, roots):
            inside.update(ast.walk(root))
    return inside


def newer_than_38(path: Path) -> list[str]:
    """What in ``path`` needs a Python newer than 3.8 (syntax, or the runtime features above)."""
    source = path.read_text(encoding="utf-8")
    rel = path.relative_to(ROOT)
    try:
        tree = ast.parse(source, filename=str(rel), feature_version=(3, 8))
    except SyntaxError as exc:
        return [f"{rel}:{exc.lineno}: not Python 3.8 syntax: {exc.msg}"]
    problems, in_annotation = [], _annotation_nodes(tree)
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in NEWER_ATTRIBUTES:
            problems.append(f"{where}: .{node.attr} needs Python {NEWER_ATTRIBUTES[node.attr]}")
        elif isinstance(node, ast.keyword) and node.arg in NEWER_KEYWORDS:
            problems.append(f"{where}: {node.arg}= needs Python {NEWER_KEYWORDS[node.arg]}")
        elif node in in_annotation:
            continue
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in GENERIC_BUILTINS:
            problems.append(f"{where}: {node.value.id}[...] outside an annotation needs Python 3.9")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and any(
                (isinstance(side, ast.Constant) and side.value is None)
                or (isinstance(side, ast.Name) and side.id in GENERIC_BUILTINS | {"int", "str", "float", "bytes"})
                for side in (node.left, node.right)):
            problems.append(f"{where}: X | Y of types outside an annotation needs Python 3.10")
    return problems


def test_code_the_2020_run_imports_is_python38():
    problems = [p for path in _sources(PY38_TREES) for p in newer_than_38(path)]
    assert problems == [], "\n".join(problems)


def _has_code(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return bool(body[1:] if body and isinstance(body[0], ast.Expr) else body)  # beyond a docstring


def test_our_modules_defer_annotations():
    missing = [str(p.relative_to(ROOT)) for p in _sources(FUTURE_TREES)
               if _has_code(p) and "from __future__ import annotations" not in p.read_text(encoding="utf-8")]
    assert missing == [], f"add `from __future__ import annotations` (the 2020 run is Python 3.8): {missing}"


@pytest.mark.parametrize("snippet, expected", [
    ("x = 1\n", []),
    ("def f(a: list[int] | None) -> dict[str, int]: ...\n", []),
    ("match x:\n    case 1: pass\n", ["not Python 3.8 syntax"]),
    ("y = list[int]\n", ["list[...] outside an annotation"]),
    ("isinstance(1, int | str)\n", ["X | Y of types"]),
    ("'ab'.removeprefix('a')\n", [".removeprefix needs Python 3.9"]),
    ("zip([], [], strict=True)\n", ["strict= needs Python 3.10"]),
])
def test_the_python38_check_catches_what_it_names(snippet, expected):
    path = ROOT / "build" / "py38_check_sample.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(snippet, encoding="utf-8")
    try:
        found = newer_than_38(path)
    finally:
        path.unlink()
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found)), found


def test_lock2020_pins_the_listed_stack():
    listed, locked = _pins(ROOT / "requirements-2020.in"), _pins(stacks.LOCK2020)
    missing = sorted(set(listed) - set(locked))
    assert missing == [], f"in requirements-2020.in, not in the lock (run `make lock2020`): {missing}"
    differ = {n: (v, locked[n]) for n, v in listed.items() if v and locked[n] != v}
    assert differ == {}, f"requirements-2020.lock disagrees with requirements-2020.in: {differ}"
    assert all(locked.values()), "every line of the lock pins an exact version"


@pytest.mark.both_stacks
def test_this_stack_runs_the_versions_its_lock_pins(stack):
    lock = stacks.LOCK2020 if stack == "2020" else ROOT / "requirements.lock"
    pins = _pins(lock)
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n) != v}
    assert differ == {}, f"{stack} stack: installed versions differ from {lock.name} (pinned, installed): {differ}"
