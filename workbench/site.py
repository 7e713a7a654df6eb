"""Render the Russian review into a static site (MkDocs Material) under build/site.

Inputs, all produced by the main job or kept in the repository:
- review/findings/*.yaml  the findings registry (text, severity, location)
- review/*.md             narrative pages; Jinja2 templates with the context below
- build/evidence/matrix.json   the last test run's evidence per finding
- build/benchmarks/*.json      pytest-benchmark reports
- build/results/*.json         figures recorded by tests and notebooks
- build/notebooks/*.ipynb      executed notebooks (embedded by mkdocs-jupyter)
- build/loadtests/*            Locust reports (linked)

Generated Markdown goes to build/docs; `mkdocs build` turns it into build/site.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from . import findings as registry
from . import machine, results

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
TEMPLATES = Path(__file__).resolve().parent / "templates"

SEVERITY_RU = {"critical": "критично", "major": "серьёзно", "minor": "незначительно", "nit": "мелочь"}
CATEGORY_RU = {"correctness": "корректность", "concurrency": "конкурентность", "security": "безопасность",
               "reliability": "надёжность", "performance": "производительность", "api": "API",
               "readability": "читаемость"}
STATUS_RU = {"demonstrated": "показано", "failed": "НЕ показано (тест упал)", "passes": "исправлено",
             "fails": "НЕ исправлено (тест упал)", "pending": "ожидается", "skipped": "пропущено",
             "no test": "нет теста", None: "нет данных (тесты не запускались)",
             "absent": "дефекта нет (проверено)", "not run": "не запускалось"}
STACK_RU = {"2020": "стек задачи (2020)", "today": "сегодня"}


def status_ru(status) -> str:
    """A side's status; the as-given side is per stack ({"2020": ..., "today": ...})."""
    if isinstance(status, dict):
        return "; ".join(f"{STACK_RU.get(k, k)}: {STATUS_RU.get(v, v)}" for k, v in status.items())
    return STATUS_RU.get(status, status)


def demonstrated(status) -> bool:
    """The as-given evidence holds (on some stack, per stack shape)."""
    values = status.values() if isinstance(status, dict) else [status]
    return "demonstrated" in values and "failed" not in values
# Partials (answers to the task's extra questions, load results) shown after each case's narrative.
PARTIALS = {1: ("case1_questions.md", "case1_volume.md"), 2: ("case2_model.md", "case2_load.md")}
CASE_TITLES = {1: "Кейс 1: скрипт обработки изображений", 2: "Кейс 2: сервис заданий на Flask"}


@dataclass
class Inputs:
    findings: list
    matrix: dict | None
    benchmarks: dict
    results: dict
    notebooks: list[Path]
    loadtests: list[Path]


def load_benchmarks(folder: Path) -> dict:
    """{report: {"machine": ..., "datetime": ..., "benchmarks": {fullname: stats}, "by_name": {...}}}."""
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = {}
        for b in raw.get("benchmarks", []):
            stats = dict(b.get("stats") or {})
            stats.update(name=b["name"], group=b.get("group"), extra_info=b.get("extra_info", {}))
            entries[b["fullname"]] = stats
        out[path.stem] = {"machine": raw.get("machine_info", {}), "datetime": raw.get("datetime"),
                          "benchmarks": entries,
                          "by_name": {s["name"]: s for s in entries.values()}}
    return out


def gather(build: Path = BUILD, registry_path: Path = registry.DEFAULT_REGISTRY) -> Inputs:
    found, errors = registry.check(registry_path)
    if errors:
        raise registry.RegistryError("the findings registry has problems:\n" + "\n".join(errors))
    matrix_path = build / "evidence" / "matrix.json"
    matrix = json.loads(matrix_path.read_text(encoding="utf-8")) if matrix_path.is_file() else None
    nb_dir, lt_dir = build / "notebooks", build / "loadtests"
    return Inputs(
        findings=found, matrix=matrix, benchmarks=load_benchmarks(build / "benchmarks"),
        results=results.load_all(build / "results"),
        notebooks=sorted(nb_dir.glob("*.ipynb")) if nb_dir.is_dir() else [],
        loadtests=sorted(p for p in lt_dir.iterdir() if p.is_file()) if lt_dir.is_dir() else [])


def _evidence(matrix: dict | None, fid: str) -> dict:
    row = (matrix or {}).get("findings", {}).get(fid)
    if row is None:
        return {"as_given": None, "fixed": None, "tests": {}}
    return row


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(ROOT / "review")),
                                    jinja2.FileSystemLoader(str(TEMPLATES))]),
        undefined=jinja2.ChainableUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        severity_ru=SEVERITY_RU.get, category_ru=CATEGORY_RU.get,
        status_ru=status_ru, demonstrated=demonstrated,
        ms=lambda seconds, digits=2: f"{seconds * 1000:.{digits}f}",
        ratio=lambda a, b, digits=1: f"{a / b:.{digits}f}" if a and b else "н/д",
        indent_block=lambda text, n=4: "\n".join((" " * n + line) if line else line
                                                 for line in str(text).splitlines()))
    return env


def _context(inputs: Inputs) -> dict:
    cards = []
    for f in inputs.findings:
        cards.append({"f": f, "excerpt": f.excerpt(), "evidence": _evidence(inputs.matrix, f.id),
                      "lang": "python" if f.file.endswith(".py") else ""})
    first_bench = next(iter(inputs.benchmarks.values()), None)
    built = {p.stem for p in inputs.notebooks}

    def notebook_link(stem: str, text: str) -> str:
        # Link only notebooks the build executed: a dangling link would fail `mkdocs --strict`.
        return f"[{text}](notebooks/{stem}.ipynb)" if stem in built else f"{text} (`notebooks/{stem}.ipynb`)"

    return {
        "cards": cards, "cards_by_case": {c: [x for x in cards if x["f"].case == c] for c in (1, 2)},
        "matrix": inputs.matrix, "benchmarks": inputs.benchmarks, "results": inputs.results,
        "notebooks": [p.stem for p in inputs.notebooks],
        "loadtests": [p.name for p in inputs.loadtests],
        "machine_summary": machine.summary(), "bench_machine": first_bench and first_bench["machine"],
        "notebook_link": notebook_link, "case_titles": CASE_TITLES, "severities": registry.SEVERITIES,
    }


def render_docs(inputs: Inputs, docs: Path) -> list[str]:
    """Write the Markdown sources of the site; return the navigation entries."""
    if docs.exists():
        shutil.rmtree(docs)
    docs.mkdir(parents=True)
    env, ctx = _environment(), _context(inputs)
    nav = []

    def page(template: str, target: str, title: str, **extra):
        text = env.get_template(template).render(**ctx, **extra)
        (docs / target).parent.mkdir(parents=True, exist_ok=True)
        (docs / target).write_text(text, encoding="utf-8")
        nav.append({title: target})

    shutil.copy2(TEMPLATES / "extra.css", docs / "extra.css")
    page("index.md", "index.md", "Обзор")
    for case in (1, 2):
        narrative = f"case{case}.md"
        has_narrative = (ROOT / "review" / narrative).is_file()
        partials = [p for p in PARTIALS[case] if (ROOT / "review" / p).is_file()]
        page("case_page.md.j2", narrative, CASE_TITLES[case], case=case,
             narrative=narrative if has_narrative else None, partials=partials)
    page("evidence.md.j2", "evidence.md", "Матрица доказательств")
    if inputs.benchmarks:
        page("benchmarks.md.j2", "benchmarks.md", "Бенчмарки")
    if inputs.loadtests:
        lt = docs / "loadtests"
        lt.mkdir()
        for p in inputs.loadtests:
            shutil.copy2(p, lt / p.name)
        page("loadtests.md.j2", "loadtests.md", "Нагрузочные прогоны")
    if inputs.notebooks:
        nb = docs / "notebooks"
        nb.mkdir()
        entries = []
        for p in inputs.notebooks:
            shutil.copy2(p, nb / p.name)
            entries.append({p.stem: f"notebooks/{p.name}"})
        nav.append({"Ноутбуки": entries})
    page("reproduce.md.j2", "reproduce.md", "Как воспроизвести")
    return nav


def write_mkdocs_config(nav: list, docs: Path, site: Path, config: Path) -> None:
    cfg = {
        "site_name": "Ревью кода: два кейса с доказательствами",
        "docs_dir": str(docs), "site_dir": str(site), "use_directory_urls": False,
        "theme": {"name": "material", "language": "ru", "font": False,
                  "features": ["navigation.sections", "toc.follow", "content.code.copy"]},
        "nav": nav, "extra_css": ["extra.css"],
        "markdown_extensions": [
            "admonition", "tables", "attr_list", "md_in_html", "pymdownx.details",
            {"pymdownx.highlight": {"anchor_linenums": True}}, "pymdownx.superfences",
            {"toc": {"permalink": True}},
        ],
        "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": True}}],
    }
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")


def build(build_dir: Path = BUILD, strict: bool = True) -> Path:
    """Render docs and run mkdocs; return the site folder (its index.html is the review)."""
    inputs = gather(build_dir)
    docs, site, config = build_dir / "docs", build_dir / "site", build_dir / "mkdocs.yml"
    nav = render_docs(inputs, docs)
    write_mkdocs_config(nav, docs, site, config)
    cmd = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(config)]
    if strict:
        cmd.append("--strict")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    subprocess.run(cmd, check=True, cwd=build_dir, env=env)
    return site


if __name__ == "__main__":
    print(build() / "index.html")
