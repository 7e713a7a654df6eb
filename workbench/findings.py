"""The findings registry: one YAML entry per finding, the single source of truth for the review.

    python -m workbench.findings check    # validate every entry; exit 1 with the problems
    python -m workbench.findings rehash   # pin each location's sha to the lines now in the file

A location is pinned by a short hash of its lines (whitespace at line ends ignored), so a finding
cannot silently drift when the as-given file changes: `check` names the entry and the new hash.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .stacks import STACKS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY = ROOT / "review" / "findings"

SEVERITIES = ("critical", "major", "minor", "nit")
CATEGORIES = ("correctness", "concurrency", "security", "reliability", "performance", "api",
              "readability")
ID_PATTERN = re.compile(r"^C(?P<case>[12])-(?P<num>\d{2,3})$")
REQUIRED = ("id", "title", "severity", "category", "location", "problem", "fix")


class RegistryError(Exception):
    """The registry cannot be read at all (bad YAML, wrong shape)."""


@dataclass(frozen=True)
class Finding:
    id: str
    title: str
    severity: str
    category: str
    file: str
    lines: tuple[int, int]
    sha: str
    problem: str
    fix: str
    source: Path  # the YAML file it came from
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def case(self) -> int:
        return int(ID_PATTERN.match(self.id)["case"])

    def excerpt(self, root: Path = ROOT) -> list[str]:
        """The lines of the as-given file that this finding points at."""
        return read_lines(root / self.file, self.lines)


def read_lines(path: Path, lines: tuple[int, int]) -> list[str]:
    text = path.read_text(encoding="utf-8").splitlines()
    start, end = lines
    return text[start - 1:end]


def lines_hash(lines: list[str]) -> str:
    joined = "\n".join(line.rstrip() for line in lines)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:12]


def _registry_files(registry: Path) -> list[Path]:
    if registry.is_file():
        return [registry]
    return sorted(registry.glob("*.yaml"))


def _parse_entry(raw: object, source: Path, index: int) -> tuple[Finding | None, list[str]]:
    where = f"{source.name} entry #{index + 1}"
    if not isinstance(raw, dict):
        return None, [f"{where}: expected a mapping, got {type(raw).__name__}"]
    fid = raw.get("id", "?")
    where = f"{source.name} {fid}"
    missing = [k for k in REQUIRED if not raw.get(k)]
    if missing:
        return None, [f"{where}: missing {', '.join(missing)}"]
    loc = raw["location"]
    if not isinstance(loc, dict) or not loc.get("file") or not isinstance(loc.get("lines"), list) \
            or len(loc["lines"]) != 2 or not all(isinstance(n, int) for n in loc["lines"]):
        return None, [f"{where}: location needs file and lines: [start, end]"]
    if loc.get("sha") is not None and not isinstance(loc["sha"], str):
        return None, [f'{where}: quote the sha (sha: "0123abcd..."), YAML reads bare digits as a number']
    extra = {k: v for k, v in raw.items() if k not in REQUIRED}
    finding = Finding(
        id=str(raw["id"]), title=str(raw["title"]).strip(), severity=str(raw["severity"]),
        category=str(raw["category"]), file=str(loc["file"]),
        lines=(loc["lines"][0], loc["lines"][1]), sha=str(loc.get("sha") or ""),
        problem=str(raw["problem"]), fix=str(raw["fix"]), source=source, extra=extra)
    return finding, []


def load(registry: Path = DEFAULT_REGISTRY) -> tuple[list[Finding], list[str]]:
    """All findings, in file order, and the structural errors met while reading them."""
    findings, errors = [], []
    files = _registry_files(registry)
    if not files:
        raise RegistryError(f"no registry files (*.yaml) under {registry}")
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except yaml.YAMLError as exc:
            raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, list):
            raise RegistryError(f"{path}: expected a list of findings at the top level")
        for i, raw in enumerate(data):
            finding, errs = _parse_entry(raw, path, i)
            errors.extend(errs)
            if finding:
                findings.append(finding)
    return findings, errors


def validate(findings: list[Finding], root: Path = ROOT) -> list[str]:
    """Every problem with the entries: IDs, vocabularies, and whether each location still holds."""
    errors, seen = [], set()
    for f in findings:
        where = f"{f.source.name} {f.id}"
        if not ID_PATTERN.match(f.id):
            errors.append(f"{where}: ID must look like C1-01 or C2-01")
        if f.id in seen:
            errors.append(f"{where}: duplicate ID")
        seen.add(f.id)
        if f.severity not in SEVERITIES:
            errors.append(f"{where}: severity {f.severity!r} is not one of {', '.join(SEVERITIES)}")
        if f.category not in CATEGORIES:
            errors.append(f"{where}: category {f.category!r} is not one of {', '.join(CATEGORIES)}")
        errors.extend(_check_stacks(f))
        errors.extend(_check_location(f, root))
    return errors


def _check_stacks(f: Finding) -> list[str]:
    """``stacks:`` (optional) describes the behaviour on each stack where they differ."""
    described = f.extra.get("stacks")
    if described is None:
        return []
    if not isinstance(described, dict) or sorted(map(str, described)) != sorted(STACKS) \
            or not all(isinstance(v, str) and v.strip() for v in described.values()):
        return [f'{f.source.name} {f.id}: stacks needs non-empty text for "2020" and today '
                '(quote "2020": YAML reads it as a number otherwise)']
    return []


def _check_location(f: Finding, root: Path) -> list[str]:
    where = f"{f.source.name} {f.id}"
    path = root / f.file
    if not path.is_file():
        return [f"{where}: location file {f.file} does not exist"]
    n_lines = len(path.read_text(encoding="utf-8").splitlines())
    start, end = f.lines
    if not 1 <= start <= end <= n_lines:
        return [f"{where}: lines {start}-{end} are outside {f.file} (1-{n_lines})"]
    actual = lines_hash(read_lines(path, f.lines))
    if not f.sha:
        return [f"{where}: location has no sha; run `python -m workbench.findings rehash`"]
    if f.sha != actual:
        return [f"{where}: lines {start}-{end} of {f.file} changed (sha {f.sha} != {actual}); "
                "check that they still hold the code the finding describes, then rehash"]
    return []


def check(registry: Path = DEFAULT_REGISTRY, root: Path = ROOT) -> tuple[list[Finding], list[str]]:
    findings, errors = load(registry)
    return findings, errors + validate(findings, root)


_SHA_LINE = re.compile(r"^(?P<indent>\s*)sha:.*$")


def rehash(registry: Path = DEFAULT_REGISTRY, root: Path = ROOT) -> list[str]:
    """Rewrite each entry's ``sha:`` line in place (text edit: comments and layout survive)."""
    changed = []
    for path in _registry_files(registry):
        findings, _ = load(path)
        by_order = iter(findings)
        out, current = [], None
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if re.match(r"^-\s+id:", line):
                current = next(by_order, None)
            m = _SHA_LINE.match(line)
            if m and current is not None and (root / current.file).is_file():
                new = lines_hash(read_lines(root / current.file, current.lines))
                if new != current.sha:
                    changed.append(f"{current.id}: {current.sha or '(none)'} -> {new}")
                line = f'{m["indent"]}sha: "{new}"\n'
            out.append(line)
        path.write_text("".join(out), encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.findings")
    parser.add_argument("action", choices=("check", "rehash", "list"))
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY)
    ns = parser.parse_args(argv)
    try:
        if ns.action == "rehash":
            for line in rehash(ns.registry):
                print(line)
            return 0
        findings, errors = check(ns.registry)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if ns.action == "list":
        for f in findings:
            print(f"{f.id}\t{f.severity}\t{f.category}\t{f.file}:{f.lines[0]}-{f.lines[1]}\t{f.title}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not errors and ns.action == "check":
        print(f"{len(findings)} findings, registry OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
