"""The committed review: plain Markdown pages whose figures and generated parts refresh in place.

    python -m workbench.review render            # refresh every marker in review/*.md and the plots
    python -m workbench.review render --check    # exit 1 naming each page or plot that is stale
    python -m workbench.review promote           # copy a complete run's build/ figures to review/data
    python -m workbench.review names             # the recorded results the pages and plots read

Pages are ordinary Markdown that reads on GitHub without any build. Two kinds of marker, both HTML
comments (invisible on GitHub and in the site), are refreshed from the recorded data
(``review/data/<name>.json``) and the findings registry:

* a value, inline: ``<!-- v case1_memory.data.bytes_per_image_model :.0f -->166<!-- /v -->``
  (result name, then keys or list indexes separated by dots, then an optional format spec after a
  colon; numbers are written with a Russian decimal comma and a no-break space between
  thousands). The pseudo-result ``calc`` holds figures the context module derives from the data.
* a block, on lines of its own: ``<!-- block cards case=1 -->`` ... ``<!-- /block -->``; the name is
  a function in :mod:`workbench.review_context` and the arguments are passed to it as strings.

An unknown name, a missing value, a float without a format spec or a value marker at the start
of a line (GitHub would show that line as raw HTML) stops the render with the page and line.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
REVIEW = ROOT / "review"
DATA = REVIEW / "data"
IMG = REVIEW / "img"
BUILD = ROOT / "build"
STACK2020_RESULTS = "stack2020"  # build/results/stack2020/: the task's stack run (workbench.pytest_plugin)

VALUE = re.compile(r"<!-- v (?P<path>[^\s]+?)(?: :(?P<spec>[^\s]*))? -->(?P<body>[^\n]*?)<!-- /v -->")
BLOCK = re.compile(r"^<!-- block (?P<name>[A-Za-z_]\w*)(?P<args>(?: [\w.-]+=[^\s]*)*) -->\n"
                   r"(?P<body>.*?)^<!-- /block -->$", re.S | re.M)
ANY_MARKER = re.compile(r"<!-- (v|/v|block|/block)\b")
NBSP = "\u00a0"


class RenderError(Exception):
    """A marker that cannot be filled: unknown name, missing value, bad format."""


# ---------------------------------------------------------------------------------------- data

def load_data(folder: Path = DATA) -> Dict[str, dict]:
    """Every recorded result under review/data, by name."""
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def lookup(tree: dict, path: str):
    """Follow ``a.b.0.c`` through dicts and lists; KeyError names the first missing part."""
    node, walked = tree, []
    for part in path.split("."):
        walked.append(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(".".join(walked))
    return node


def format_number(value, spec: str = "") -> str:
    """Russian number style: decimal comma, no-break space between thousands and before ``%``.

    Strings (labels the data carries) are written as they are; a format spec is for numbers only.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if spec:
            raise RenderError(f"format spec {spec!r} given for a non-number {value!r}")
        return str(value)
    if isinstance(value, float) and not spec:
        raise RenderError(f"float {value!r} needs a format spec (e.g. :.1f)")
    text = format(value, spec) if spec else str(value)
    text = text.replace(",", NBSP).replace(".", ",").replace("-", "−")
    # Russian typography puts a (no-break) space between a number and the percent sign.
    return text[:-1] + NBSP + "%" if text.endswith("%") else text


# ------------------------------------------------------------------------------------ render

@dataclass
class Page:
    path: Path
    text: str


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _parse_args(raw: str) -> Dict[str, str]:
    return dict(item.split("=", 1) for item in raw.split())


def render_text(text: str, ctx, where: str = "<text>") -> str:
    """Refresh every block, then every value, in one page's text."""
    from . import review_context

    def fill_block(m: "re.Match") -> str:
        name, args = m["name"], _parse_args(m["args"])
        func = review_context.BLOCKS.get(name)
        if func is None:
            raise RenderError(f"{where}:{_line_of(text, m.start())}: unknown block {name!r} "
                              f"(known: {', '.join(sorted(review_context.BLOCKS))})")
        try:
            body = func(ctx, **args).strip("\n")
        except RenderError as exc:
            raise RenderError(f"{where}:{_line_of(text, m.start())}: block {name}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise RenderError(f"{where}:{_line_of(text, m.start())}: block {name}: "
                              f"{type(exc).__name__}: {exc}") from exc
        if ANY_MARKER.search(body):
            raise RenderError(f"{where}: block {name} produced a marker; blocks must not nest")
        inner = f"\n{body}\n\n" if body else "\n"
        return f"<!-- block {name}{m['args']} -->\n{inner}<!-- /block -->"

    text = BLOCK.sub(fill_block, text)

    def fill_value(m: "re.Match") -> str:
        line = _line_of(text, m.start())
        if m.start() == 0 or text[m.start() - 1] == "\n":
            raise RenderError(f"{where}:{line}: a value marker must not start a line "
                              "(GitHub would show the whole line as raw HTML)")
        try:
            value = lookup(ctx.values, m["path"])
        except KeyError as exc:
            raise RenderError(f"{where}:{line}: no recorded value {m['path']!r} "
                              f"(missing part: {exc.args[0]!r})") from None
        try:
            shown = format_number(value, m["spec"] or "")
        except (RenderError, ValueError) as exc:
            raise RenderError(f"{where}:{line}: {m['path']}: {exc}") from None
        spec = f" :{m['spec']}" if m["spec"] else ""
        return f"<!-- v {m['path']}{spec} -->{shown}<!-- /v -->"

    text = VALUE.sub(fill_value, text)
    _check_balanced(text, where)
    return text


def _check_balanced(text: str, where: str) -> None:
    """Every opening marker has its closing one (a typo must not silently leave stale text)."""
    opened_blocks = len(re.findall(r"<!-- block ", text))
    closed_blocks = len(re.findall(r"<!-- /block -->", text))
    if opened_blocks != closed_blocks or opened_blocks != len(BLOCK.findall(text)):
        raise RenderError(f"{where}: block markers are malformed or unbalanced "
                          f"({opened_blocks} opened, {closed_blocks} closed)")
    if len(re.findall(r"<!-- v ", text)) != len(VALUE.findall(text)) or \
            len(re.findall(r"<!-- /v -->", text)) != len(VALUE.findall(text)):
        raise RenderError(f"{where}: a value marker is malformed or not closed on its line")


def pages(review: Path = REVIEW) -> List[Path]:
    return sorted(review.glob("*.md"))


def render(review: Path = REVIEW, data: Path = DATA, check: bool = False,
           plots: bool = True) -> List[str]:
    """Refresh every page (and plot); return what changed (or, with ``check``, what is stale)."""
    from . import review_context, review_plots

    ctx = review_context.Context.load(review=review, data=data)
    changed = []
    for path in pages(review):
        ctx.current = path.relative_to(review).as_posix()
        old = path.read_text(encoding="utf-8")
        new = render_text(old, ctx, where=str(path.relative_to(review.parent)))
        if new != old:
            changed.append(str(path.relative_to(review.parent)))
            if not check:
                path.write_text(new, encoding="utf-8")
    if plots:
        changed += review_plots.draw_all(ctx, review / "img", check=check)
    return changed


class _Reads(dict):
    """A dict that notes every key asked for (which recorded results the pages read)."""

    def __init__(self, data: dict, seen: set):
        super().__init__(data)
        self.seen = seen

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self.seen.add(key)
        return super().__contains__(key)


def used_names(review: Path = REVIEW, data: Path = DATA) -> List[str]:
    """The recorded results (review/data/<name>.json) that the pages and plots read."""
    from . import review_context, review_plots

    seen: set = set()
    ctx = review_context.Context.load(review=review, data=data)
    ctx.data = _Reads(ctx.data, seen)
    ctx.values = _Reads(dict(ctx.data, calc=review_context.Derived(ctx)), seen)
    for path in pages(review):
        ctx.current = path.relative_to(review).as_posix()
        render_text(path.read_text(encoding="utf-8"), ctx, where=str(path.relative_to(review.parent)))
    for func in review_plots.PLOTS.values():
        review_plots.render_svg(func, ctx)
    return sorted(seen - {"calc"})


# ----------------------------------------------------------------------------------- promote

def promote(build: Path = BUILD, data: Path = DATA, since: Optional[float] = None) -> List[str]:
    """Copy a complete run's figures from build/ to review/data (the committed record).

    Refuses when the evidence matrix is not from a complete run. ``since`` (epoch seconds) keeps
    results recorded before this job started out of the record. Results of the 2020 stack's run
    (``build/results/stack2020/<name>.json``) are promoted as ``<name>_2020``. The test command records
    nothing under build/results (its notebooks write to a temporary folder) and never promotes.
    """
    from . import machine

    matrix_path = build / "evidence" / "matrix.json"
    if not matrix_path.is_file():
        raise RenderError(f"no evidence matrix at {matrix_path}: run the evidence step first")
    matrix = json.loads(matrix_path.read_text(encoding="utf-8"))
    if not matrix.get("complete_run"):
        raise RenderError(f"{matrix_path} is from a partial run; refusing to promote it")
    if since is not None and _epoch(matrix.get("generated_at")) < since - 1:
        raise RenderError(f"{matrix_path} is from an earlier run than this one; refusing to promote it")
    staged = {"evidence": {"name": "evidence", "recorded_at": matrix["generated_at"],
                           "machine": machine.describe(), "data": matrix}}
    # Today's figures keep their names; the 2020 stack's run records the same names under
    # results/stack2020/ and is promoted as <name>_2020 (e.g. case1_magic_cost_2020).
    for folder, suffix in ((build / "results", ""), (build / "results" / STACK2020_RESULTS, "_2020")):
        for path in sorted(folder.glob("*.json")):
            payload = json.loads(path.read_text(encoding="utf-8"))
            if since is not None and _epoch(payload.get("recorded_at")) < since - 1:
                print(f"promote: skipping {path.relative_to(build)}: recorded before this run")
                continue
            staged[path.stem + suffix] = payload
    for path in sorted((build / "benchmarks").glob("*.json")):
        staged[f"benchmarks_{path.stem}"] = _condensed_benchmarks(path)
    data.mkdir(parents=True, exist_ok=True)
    written = []
    for name, payload in staged.items():
        target = data / f"{name}.json"
        target.write_text(json.dumps(payload, indent=1, ensure_ascii=False, sort_keys=False) + "\n",
                          encoding="utf-8")
        written.append(str(target))
    return written


def run_started(build: Path = BUILD) -> Optional[float]:
    """When the last whole main job started measuring (build/run.json), if one did."""
    path = build / "run.json"
    return json.loads(path.read_text(encoding="utf-8"))["started"] if path.is_file() else None


def _epoch(stamp: Optional[str]) -> float:
    if not stamp:
        return 0.0
    import calendar
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _condensed_benchmarks(path: Path) -> dict:
    """A pytest-benchmark report without its raw samples: statistics by test name."""
    from . import machine

    raw = json.loads(path.read_text(encoding="utf-8"))
    keep = ("min", "max", "mean", "stddev", "median", "iqr", "rounds", "iterations")
    benches = {}
    for b in raw.get("benchmarks", []):
        stats = {k: b["stats"][k] for k in keep if k in b.get("stats", {})}
        benches[b["name"]] = dict(stats, group=b.get("group"), extra_info=b.get("extra_info", {}))
    stamp = (raw.get("datetime") or "")[:19]
    return {"name": f"benchmarks_{path.stem}",
            "recorded_at": (stamp + "Z") if stamp else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine.describe(),
            "data": {"suite": path.stem, "benchmarks": benches}}


# --------------------------------------------------------------------------------------- CLI

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.review",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("render", help="refresh the markers in review/*.md and the plots")
    r.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale")
    r.add_argument("--no-plots", action="store_true", help="pages only")
    sub.add_parser("promote", help="copy a complete run's figures from build/ to review/data")
    sub.add_parser("names", help="list the recorded results (review/data/<name>.json) the review reads")
    ns = parser.parse_args(argv)
    try:
        if ns.action == "names":
            print("\n".join(used_names()))
            return 0
        if ns.action == "promote":
            for line in promote(since=run_started()):
                print(f"promoted {line}")
            return 0
        changed = render(check=ns.check, plots=not ns.no_plots)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if ns.check:
        if changed:
            print("stale against review/data and the registry (run `python -m workbench.review render`):",
                  *changed, sep="\n  ", file=sys.stderr)
            return 1
        print("review is up to date with review/data and the registry")
        return 0
    print("\n".join(f"rendered {c}" for c in changed) or "nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
