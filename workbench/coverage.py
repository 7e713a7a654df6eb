"""The completeness map: every line of both originals, mapped to findings or to "nothing to say".

    python -m workbench.coverage check    # validate the map against the files and the registry
    python -m workbench.coverage rehash   # re-pin each range's sha to the lines now in the file
    python -m workbench.coverage table    # print the Markdown tables (what the review shows)

``review/coverage.yaml`` lists, per as-given file, contiguous line ranges in order. Each range has
``lines: [start, end]``, a ``sha`` of those lines (the registry's hash, so a changed file makes the
map stale instead of silently wrong) and either ``findings: [IDs]`` or ``nothing: <one-line
Russian reason>``. The map is complete when every non-blank line lies in a range, and consistent
when every ID exists and every finding located in a file appears somewhere on that file's map.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import findings as registry

ROOT = registry.ROOT
DEFAULT_MAP = ROOT / "review" / "coverage.yaml"
_CYRILLIC = re.compile(r"[А-Яа-яЁё]")
_SHA_LINE = registry._SHA_LINE  # the same "sha:" line the registry rewrites


class MapError(Exception):
    """The map cannot be read at all (bad YAML, wrong shape)."""


@dataclass(frozen=True)
class Range:
    file: str
    lines: tuple[int, int]
    sha: str
    findings: tuple[str, ...] = ()
    nothing: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.lines[0]}-{self.lines[1]}"


@dataclass
class FileMap:
    file: str
    ranges: list[Range] = field(default_factory=list)


def load(path: Path = DEFAULT_MAP) -> list[FileMap]:
    """The map as written, in file order; shape errors raise :class:`MapError`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MapError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, list):
        raise MapError(f"{path}: expected a list of {{file, ranges}} at the top level")
    maps = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                or not isinstance(entry.get("ranges"), list):
            raise MapError(f"{path}: every entry needs file: <path> and ranges: [...]")
        file_map = FileMap(entry["file"])
        for raw in entry["ranges"]:
            lines = raw.get("lines") if isinstance(raw, dict) else None
            if not (isinstance(lines, list) and len(lines) == 2 and all(isinstance(n, int) for n in lines)):
                raise MapError(f"{path}: {entry['file']}: a range needs lines: [start, end], got {raw!r}")
            ids = raw.get("findings") or []
            if not isinstance(ids, list):
                raise MapError(f"{path}: {entry['file']}:{lines}: findings must be a list of IDs")
            file_map.ranges.append(Range(entry["file"], (lines[0], lines[1]), str(raw.get("sha") or ""),
                                         tuple(str(i) for i in ids), str(raw.get("nothing") or "").strip()))
        maps.append(file_map)
    return maps


def validate(maps: list[FileMap], known: list[registry.Finding], root: Path = ROOT) -> list[str]:
    """Every problem: gaps, overlaps, stale hashes, unknown IDs, findings missing from the map."""
    errors = []
    ids = {f.id for f in known}
    for file_map in maps:
        path = root / file_map.file
        if not path.is_file():
            errors.append(f"{file_map.file}: no such file")
            continue
        text = path.read_text(encoding="utf-8").splitlines()
        covered = [False] * (len(text) + 1)
        previous_end = 0
        for r in file_map.ranges:
            start, end = r.lines
            if not 1 <= start <= end <= len(text):
                errors.append(f"{r.where}: outside the file (1-{len(text)})")
                continue
            if start <= previous_end:
                errors.append(f"{r.where}: overlaps or precedes the range before it (ranges go in order)")
            previous_end = max(previous_end, end)
            actual = registry.lines_hash(registry.read_lines(path, r.lines))
            if r.sha != actual:
                errors.append(f"{r.where}: the lines changed (sha {r.sha or '(none)'} != {actual}); "
                              "re-read them, fix the entry, then `python -m workbench.coverage rehash`")
            errors.extend(_check_verdict(r, ids))
            for n in range(start, end + 1):
                covered[n] = True
        errors.extend(_check_gaps(file_map.file, text, covered))
        mapped = {i for r in file_map.ranges for i in r.findings}
        errors.extend(f"{f.id} ({f.file}:{f.lines[0]}-{f.lines[1]}) is not on the map of its file"
                      for f in known if f.file == file_map.file and f.id not in mapped)
    return errors


def _check_verdict(r: Range, ids: set[str]) -> list[str]:
    if r.findings and r.nothing:
        return [f"{r.where}: give findings or a reason why there is nothing to say, not both"]
    if not r.findings and not r.nothing:
        return [f"{r.where}: unmapped: list the findings or say (in Russian) why there is nothing to say"]
    if r.nothing and ("\n" in r.nothing or not _CYRILLIC.search(r.nothing)):
        return [f"{r.where}: the 'nothing to say' reason must be one line of Russian text"]
    return [f"{r.where}: {i} is not in the findings registry" for i in r.findings if i not in ids]


def _check_gaps(file: str, text: list[str], covered: list[bool]) -> list[str]:
    """Runs of non-blank lines that no range covers (blank lines need no verdict)."""
    runs: list[list[int]] = []
    for n in range(1, len(text) + 1):
        if covered[n] or not text[n - 1].strip():
            continue
        if runs and all(not text[k - 1].strip() for k in range(runs[-1][1] + 1, n)):
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [f"{file}:{a}-{b}: no range covers these lines" for a, b in runs]


def check(path: Path = DEFAULT_MAP, root: Path = ROOT) -> tuple[list[FileMap], list[str]]:
    known, registry_errors = registry.load()
    maps = load(path)
    return maps, [f"registry: {e}" for e in registry_errors] + validate(maps, known, root)


def rehash(path: Path = DEFAULT_MAP, root: Path = ROOT) -> list[str]:
    """Rewrite every ``sha:`` line in place, in range order (comments and layout survive)."""
    ranges = iter([r for m in load(path) for r in m.ranges])
    changed, out = [], []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        m = _SHA_LINE.match(line)
        if m:
            r = next(ranges)
            new = registry.lines_hash(registry.read_lines(root / r.file, r.lines))
            if new != r.sha:
                changed.append(f"{r.where}: {r.sha or '(none)'} -> {new}")
            line = f'{m["indent"]}sha: "{new}"\n'
        out.append(line)
    path.write_text("".join(out), encoding="utf-8")
    return changed


# --------------------------------------------------------------------------- what the review shows


def counts(maps: list[FileMap] | None = None, root: Path = ROOT) -> dict[str, dict[str, int]]:
    """Per file: lines, blank lines, non-blank lines under findings, non-blank lines with nothing to say."""
    out = {}
    for file_map in maps if maps is not None else load():
        text = (root / file_map.file).read_text(encoding="utf-8").splitlines()
        row = {"lines": len(text), "blank": sum(1 for t in text if not t.strip()), "findings": 0, "nothing": 0}
        for r in file_map.ranges:
            filled = sum(1 for t in text[r.lines[0] - 1:r.lines[1]] if t.strip())
            row["findings" if r.findings else "nothing"] += filled
        out[file_map.file] = row
    return out


def coverage_rows(maps: list[FileMap] | None = None, root: Path = ROOT) -> list[dict]:
    """One dict per range, for renderers: file, start, end, code (the first non-blank line),
    findings (IDs) and nothing (the reason, or "")."""
    rows = []
    for file_map in maps if maps is not None else load():
        text = (root / file_map.file).read_text(encoding="utf-8").splitlines()
        for r in file_map.ranges:
            first = next((t.strip() for t in text[r.lines[0] - 1:r.lines[1]] if t.strip()), "")
            rows.append({"file": r.file, "start": r.lines[0], "end": r.lines[1], "code": first,
                         "findings": list(r.findings), "nothing": r.nothing})
    return rows


def _default_link(finding_id: str) -> str:
    return f"[{finding_id}](#{finding_id.lower()})"


def coverage_table(file: str | None = None, link=_default_link, maps: list[FileMap] | None = None,
                   root: Path = ROOT, code_width: int = 60) -> str:
    """Markdown: one table per file (or only ``file``), a row per range, with totals above it.

    ``link(id) -> str`` renders a finding reference (default: an anchor ``#c1-05`` on the page).
    """
    maps = maps if maps is not None else load()
    totals = counts(maps, root)
    parts = []
    for file_map in maps:
        if file is not None and file_map.file != file:
            continue
        t = totals[file_map.file]
        parts.append(f"**`{file_map.file}`**: строк всего — {t['lines']}; непустых, относящихся к находкам, — "
                     f"{t['findings']}; непустых, о которых сказать нечего, — {t['nothing']}; пустых — {t['blank']}.\n")
        parts.append("| строки | код | находки или почему сказать нечего |")
        parts.append("|---|---|---|")
        for row in coverage_rows([file_map], root):
            span = str(row["start"]) if row["start"] == row["end"] else f"{row['start']}–{row['end']}"
            code = row["code"] if len(row["code"]) <= code_width else row["code"][:code_width - 1] + "…"
            code = "`" + code.replace("|", "\\|").replace("`", "'") + "`" if code else ""
            verdict = ", ".join(link(i) for i in row["findings"]) or row["nothing"].replace("|", "\\|")
            parts.append(f"| {span} | {code} | {verdict} |")
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.coverage")
    parser.add_argument("action", choices=("check", "rehash", "table"))
    parser.add_argument("--map", type=Path, default=DEFAULT_MAP)
    ns = parser.parse_args(argv)
    try:
        if ns.action == "rehash":
            for line in rehash(ns.map):
                print(line)
            return 0
        maps, errors = check(ns.map)
    except (MapError, registry.RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if ns.action == "table":
        print(coverage_table(maps=maps))
    elif not errors:
        for name, t in counts(maps).items():
            print(f"{name}: {t['findings']} lines under findings, {t['nothing']} with nothing to say, "
                  f"{t['blank']} blank, of {t['lines']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
