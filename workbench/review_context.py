"""What the review's markers are filled with: derived figures and generated blocks, in one place.

The pages (review/*.md) stay prose; every table row, card and formatted figure they show is built
here from the recorded data (review/data/<name>.json), the findings registry and the page list
(review/pages.yml). A block is a function registered with ``@block``; it returns Markdown that
reads the same on GitHub and in the site. Anything missing raises, so a page never shows a gap.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from . import findings as registry

BLOCKS: Dict[str, Callable[..., str]] = {}

SEVERITY_RU = {"critical": "критично", "major": "серьёзно", "minor": "незначительно", "nit": "мелочь"}
CATEGORY_RU = {"correctness": "корректность", "concurrency": "конкурентность",
               "security": "безопасность", "reliability": "надёжность",
               "performance": "производительность", "api": "API", "readability": "читаемость"}
STATUS_RU = {"demonstrated": "показано", "failed": "НЕ показано (тест упал)",
             "absent": "дефекта нет (проверено)", "not run": "не запускалось",
             "passes": "исправлено", "fails": "НЕ исправлено (тест упал)", "pending": "ожидается",
             "skipped": "пропущено", "no test": "нет теста"}
STACKS = ("2020", "today")  # workbench.stacks.STACKS, in the order the review shows them
STACK_RU = {"2020": "стек задачи (Python 3.8, 2020)", "today": "сегодняшний стек"}
STACK_SHORT = {"2020": "стек задачи", "today": "сегодня"}
STACK_ON = {"2020": "на стеке задачи", "today": "на сегодняшнем стеке"}
OUTCOME_RU = {"caught": "пойман", "survived": "выжил", "error": "ошибка", "timeout": "таймаут"}
MUTATION_RU = {"caught": "пойман", "not caught": "НЕ пойман", "missing": "нет мутанта",
               "not run": "не запускался"}
SIDE_RU = {"as_given": "исходный код", "patched": "минимально исправленная версия", "fixed": "исправленный код"}
CASE_PAGE = {1: "case1.md", 2: "case2.md"}
SERVICE_RU = {"as_given": "исходный", "fixed": "исправленный"}
SERVER_RU = {"gunicorn": "gunicorn gthread", "flask-dev": "Flask dev-сервер (threaded)"}


def block(func: Callable[..., str]) -> Callable[..., str]:
    BLOCKS[func.__name__] = func
    return func


class Missing(KeyError):
    pass


# --------------------------------------------------------------------------------- context

@dataclass
class Context:
    data: Dict[str, dict]
    findings: List[registry.Finding]
    page_list: List[dict]
    review: Path
    current: str = "README.md"  # the page being rendered (links are relative to it)
    values: dict = field(default_factory=dict)

    @classmethod
    def load(cls, review: Path, data: Path) -> "Context":
        from .review import load_data

        found, errors = registry.check()
        if errors:
            raise registry.RegistryError("the findings registry has problems:\n" + "\n".join(errors))
        pages_file = review / "pages.yml"
        page_list = yaml.safe_load(pages_file.read_text(encoding="utf-8")) if pages_file.is_file() else []
        ctx = cls(data=load_data(data), findings=found, page_list=page_list, review=review)
        ctx.values = dict(ctx.data, calc=Derived(ctx))
        return ctx

    # -- data access -------------------------------------------------------------------------
    def result(self, name: str) -> dict:
        if name not in self.data:
            raise Missing(f"review/data/{name}.json is not recorded")
        return self.data[name]

    def matrix(self) -> dict:
        return (self.data.get("evidence") or {}).get("data") or {}

    def evidence(self, fid: str) -> Optional[dict]:
        return self.matrix().get("findings", {}).get(fid)

    def finding(self, fid: str) -> registry.Finding:
        for f in self.findings:
            if f.id == fid:
                return f
        raise Missing(f"finding {fid} is not in the registry")

    def by_case(self, case: int) -> List[registry.Finding]:
        return sorted((f for f in self.findings if f.case == case),
                      key=lambda f: (f.lines[0], f.lines[1], f.id))

    # -- links -------------------------------------------------------------------------------
    def exists(self, page: str) -> bool:
        return (self.review / page).is_file()

    def href(self, page: str, anchor: str = "") -> str:
        """A link from the page being rendered to ``page`` (#anchor alone on the same page)."""
        if page == self.current:
            return f"#{anchor}" if anchor else "#"
        rel = posixpath.relpath(page, posixpath.dirname(self.current) or ".")
        return f"{rel}#{anchor}" if anchor else rel

    def card_link(self, fid: str) -> str:
        return self.href(CASE_PAGE[self.finding(fid).case], fid.lower())

    def pages_in(self, section: Optional[str] = None) -> List[dict]:
        out = []
        for sec in self.page_list:
            if section is None or sec["section"] == section:
                out += [dict(p, section=sec["section"]) for p in sec["pages"] if self.exists(p["file"])]
        return out

    def page_title(self, page: str) -> str:
        for p in self.pages_in():
            if p["file"] == page:
                return p["title"]
        raise Missing(f"{page} is not in review/pages.yml or does not exist")


class Derived(dict):
    """Figures computed from the recorded data, addressable as ``calc.<name>`` in value markers."""

    def __init__(self, ctx: Context):
        super().__init__()
        self._ctx = ctx

    def __contains__(self, key) -> bool:
        return key in DERIVED

    def __getitem__(self, key):
        if key not in DERIVED:
            raise KeyError(key)
        return DERIVED[key](self._ctx)


DERIVED: Dict[str, Callable[[Context], object]] = {}


def derived(func):
    DERIVED[func.__name__] = func
    return func


# ------------------------------------------------------------------------------- formatting

def num(value, spec: str = ".0f") -> str:
    from .review import format_number
    return format_number(value, spec)


def table(header: List[str], rows: List[List[str]], align: Optional[str] = None) -> str:
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(payload: dict) -> str:
    m = payload["machine"]
    pk = m.get("packages", {})
    libs = ", ".join(f"{k} {pk[k]}" for k in ("numpy", "pillow", "requests", "flask", "werkzeug",
                                              "peewee", "psycopg2-binary", "gunicorn", "locust")
                     if k in pk)
    return (f"{m['cpu']}, логических ядер: {m['logical_cores']}, памяти {num(m['memory_gib'], '.1f')} ГиБ; "
            f"{m['os']}; Python {m['python']}; {libs}; записано {payload['recorded_at']}")


def status_ru(status) -> str:
    if isinstance(status, dict):  # per stack: {"2020": ..., "today": ...}
        return "; ".join(f"{STACK_RU.get(k, k)}: {STATUS_RU.get(v, v)}" for k, v in _by_stack(status))
    if status is None:
        return "нет данных"
    return STATUS_RU.get(status, status)


def _by_stack(status: dict):
    """(stack, value) in the review's order: the task's stack first."""
    return sorted(status.items(), key=lambda kv: STACKS.index(kv[0]) if kv[0] in STACKS else len(STACKS))


def stack_status(status, stack: str) -> Optional[str]:
    """One stack's as-given status; the older single-status shape counts for today's stack."""
    if isinstance(status, dict):
        return status.get(stack)
    return status if stack == "today" else None


def demonstrated(status) -> bool:
    """Demonstrated on every stack that checked for it (``absent`` on a stack it is not on counts)."""
    if isinstance(status, dict):
        return any(v == "demonstrated" for v in status.values()) and \
            all(v in ("demonstrated", "absent") for v in status.values())
    return status == "demonstrated"


# ------------------------------------------------------------------------ findings blocks

@block
def top(ctx: Context, ids: str) -> str:
    """The problems that matter most, in the given (editorial) order: one line each."""
    lines = []
    for n, fid in enumerate(ids.split(","), 1):
        f = ctx.finding(fid)
        lines.append(f"{n}. **{SEVERITY_RU[f.severity]}** · [{f.id}]({ctx.card_link(f.id)}) {f.title}")
    return "\n".join(lines)


@block
def counts(ctx: Context) -> str:
    """Findings by severity, and how many the recorded run demonstrated on each stack and fixed."""
    rows = []
    for case in (1, 2):
        fs = ctx.by_case(case)
        ev = [ctx.evidence(f.id) or {} for f in fs]
        rows.append([f"[Кейс {case}]({ctx.href(CASE_PAGE[case])})"]
                    + [str(sum(f.severity == s for f in fs)) for s in registry.SEVERITIES]
                    + [str(len(fs))]
                    + [str(sum(stack_status(e.get("as_given"), st) == "demonstrated" for e in ev)) for st in STACKS]
                    + [str(sum(e.get("fixed") == "passes" for e in ev))])
    header = (["Кейс"] + [SEVERITY_RU[s] for s in registry.SEVERITIES] + ["всего"]
              + [f"показано: {STACK_RU[st]}" for st in STACKS] + ["исправлено в новом коде"])
    out = table(header, rows, "l" + "r" * (len(header) - 1))
    notes = _stack_notes(ctx)
    return out + ("\n\n" + notes if notes else "")


def _stack_notes(ctx: Context) -> str:
    """Findings not demonstrated on every stack, and why: one sentence per stack."""
    out = []
    for st in STACKS:
        rows = [(f, stack_status((ctx.evidence(f.id) or {}).get("as_given"), st)) for f in ctx.findings]
        absent = [f for f, v in rows if v == "absent"]
        other = [(f, v) for f, v in rows if v not in ("demonstrated", "absent")]
        if absent:
            out.append(f"{STACK_ON[st].capitalize()} дефекта нет — тест проверяет его отсутствие: "
                       + ", ".join(f"[{f.id}]({ctx.card_link(f.id)})" for f in absent) + ".")
        if other:
            out.append(f"{STACK_ON[st].capitalize()} не показано: "
                       + ", ".join(f"[{f.id}]({ctx.card_link(f.id)}) — {status_ru(v)}" for f, v in other) + ".")
    return " ".join(out)


def _short(status) -> str:
    return {"demonstrated": "показано", "absent": "нет (проверено)"}.get(status, status_ru(status))


@block
def findings_table(ctx: Context, case: str) -> str:
    rows = []
    for f in ctx.by_case(int(case)):
        ev = ctx.evidence(f.id) or {}
        lines = str(f.lines[0]) if f.lines[0] == f.lines[1] else f"{f.lines[0]}–{f.lines[1]}"
        rows.append([f"[{f.id}]({ctx.card_link(f.id)})", SEVERITY_RU[f.severity],
                     CATEGORY_RU[f.category], f.title, lines]
                    + [_short(stack_status(ev.get("as_given"), st)) for st in STACKS]
                    + [status_ru(ev.get("fixed"))])
    return table(["ID", "Серьёзность", "Категория", "Находка", "Строки"]
                 + [f"Исходный код: {STACK_SHORT[st]}" for st in STACKS] + ["Исправленный код"], rows)


def _test_items(tests, label: str = ""):
    """(side[/stack], test) pairs from the matrix's tests: by side, or by side and then stack."""
    if isinstance(tests, dict):
        for key, value in tests.items():
            yield from _test_items(value, f"{label}/{key}" if label else str(key))
    elif isinstance(tests, list):
        for t in tests:
            yield label, t


def _evidence_text(ctx: Context, f: registry.Finding) -> str:
    ev = ctx.evidence(f.id)
    if ev is None:
        raise Missing(f"{f.id} has no row in the recorded evidence matrix (review/data/evidence.json)")
    n_tests = sum(1 for _ in _test_items(ev.get("tests", {})))
    text = (f"**Доказательство.** Исходный код: {status_ru(ev.get('as_given'))}. "
            f"Исправленный код: {status_ru(ev.get('fixed'))}.")
    if ev.get("behaviour_differs"):
        text += " Поведение на стеке задачи и на сегодняшнем различается (см. «По стекам» выше)."
    mutants = _mutation_of(ctx, f.id)
    if mutants:
        text += (" Мутанты (дефект исправлен в исходном коде / возвращён в исправленный): "
                 f"{MUTATION_RU.get(mutants.get('as_given'), mutants.get('as_given'))} / "
                 f"{MUTATION_RU.get(mutants.get('fixed'), mutants.get('fixed'))}.")
    items = [f"- `{t['test']}` ({_test_note(side, t)})" for side, t in _test_items(ev.get("tests", {}))]
    if items:
        text += (f"\n\n<details markdown=\"1\"><summary>Тесты ({n_tests})</summary>\n\n"
                 + "\n".join(items) + "\n\n</details>")
    return text


def _test_note(side: str, t: dict) -> str:
    """'исходный код; стек задачи: passed, сегодня: passed' (or the side and one outcome)."""
    label = SIDE_RU.get(side.split("/")[0], side)
    stacks = t.get("stacks")
    if isinstance(stacks, dict) and stacks:
        return label + "; " + ", ".join(f"{STACK_SHORT.get(k, k)}: {v or 'не запускался'}"
                                       for k, v in _by_stack(stacks))
    return f"{label}: {t.get('outcome')}"


def _mutation_of(ctx: Context, fid: str) -> Optional[dict]:
    m = ctx.data.get("mutation")
    return ((m or {}).get("data") or {}).get("findings", {}).get(fid)


def _card(ctx: Context, f: registry.Finding) -> str:
    lang = "python" if f.file.endswith(".py") else ""
    excerpt = "\n".join(f.excerpt())
    parts = [
        f'<a id="{f.id.lower()}"></a>',
        f"### {f.id} · {f.title}",
        f"**{SEVERITY_RU[f.severity].capitalize()}** · {CATEGORY_RU[f.category]} · "
        f"`{f.file}`, строки {f.lines[0]}–{f.lines[1]}",
        f'```{lang} linenums="{f.lines[0]}"\n{excerpt}\n```',
        "**Проблема.**",
        f.problem.strip(),
    ]
    stacks = f.extra.get("stacks")
    if isinstance(stacks, dict) and stacks:
        parts.append("**По стекам.**")
        parts.append("\n".join(f"- {STACK_RU.get(str(k), k)}: {' '.join(str(v).split())}"
                               for k, v in _by_stack({str(k): v for k, v in stacks.items()})))
    parts += ["**Как исправить.**", f.fix.strip(), _evidence_text(ctx, f)]
    return "\n\n".join(parts)


@block
def cards(ctx: Context, case: str) -> str:
    """Every finding of one case, in the order of the lines it points at."""
    return "\n\n".join(_card(ctx, f) for f in ctx.by_case(int(case)))


@block
def evidence_matrix(ctx: Context) -> str:
    """Every finding: as-given status per stack, fixed status, its mutants, its tests."""
    m = ctx.matrix()
    if not m:
        raise Missing("review/data/evidence.json is not recorded")
    with_mutation = bool(ctx.data.get("mutation"))
    rows = []
    for fid, row in m["findings"].items():
        try:
            title = ctx.finding(fid).title
            link = f"[{fid}]({ctx.card_link(fid)})"
        except Missing:
            title, link = row.get("title", ""), fid
        cells = [link, SEVERITY_RU.get(row.get("severity"), row.get("severity")), title]
        cells += [_short(stack_status(row.get("as_given"), st)) for st in STACKS]
        cells.append(status_ru(row.get("fixed")))
        if with_mutation:
            mut = _mutation_of(ctx, fid) or {}
            cells.append(" / ".join(MUTATION_RU.get(mut.get(side), mut.get(side) or "—")
                                    for side in ("as_given", "fixed")))
        cells.append(str(sum(1 for _ in _test_items(row.get("tests", {})))))
        rows.append(cells)
    head = (f"Матрица записана {m['generated_at']} (полный прогон тестов"
            f"{'' if m.get('complete_run') else ' — НЕТ, неполный'}).")
    header = (["ID", "Серьёзность", "Находка"] + [f"Исходный: {STACK_SHORT[st]}" for st in STACKS]
              + ["Исправленный"] + (["Мутанты: исходный / исправленный"] if with_mutation else [])
              + ["Тестов"])
    return head + "\n\n" + table(header, rows, "l" * (len(header) - 1) + "r")


@block
def stack_versions(ctx: Context) -> str:
    """The two stacks the evidence ran on, as the recorded matrix describes them."""
    notes = ctx.matrix().get("stacks") or {}
    if not notes:
        raise Missing("the recorded evidence matrix does not describe its stacks")
    ran = {st: set() for st in STACKS}  # as-given and patched tests that ran on each stack
    for row in ctx.matrix().get("findings", {}).values():
        for side in ("as_given", "patched"):
            for t in (row.get("tests") or {}).get(side, []):
                for st, outcome in (t.get("stacks") or {}).items():
                    if outcome and st in ran:
                        ran[st].add(t["test"])
    rows = []
    for st in STACKS:
        note = notes.get(st) or {}
        if note.get("ran"):
            env = note.get("environment", {})
            pk = env.get("packages", {})
            libs = ", ".join(f"{k} {pk[k]}" for k in ("numpy", "pillow", "requests", "flask", "werkzeug",
                                                      "peewee", "psycopg2-binary", "gunicorn") if k in pk)
            rows.append([STACK_RU[st], f"Python {env.get('python', '?')}", libs, str(len(ran[st]))])
        else:
            rows.append([STACK_RU[st], "—", "—", f"не запускались: {note.get('reason', 'нет отчёта')}"])
    return table(["Стек", "Интерпретатор", "Библиотеки", "Тестов исходного кода"], rows, "lllr")


@block
def stack_counts(ctx: Context) -> str:
    """Per stack: demonstrated, absent (checked), anything else; and how many differ by stack."""
    rows = []
    for case in (1, 2):
        ev = [ctx.evidence(f.id) or {} for f in ctx.by_case(case)]
        for st in STACKS:
            statuses = [stack_status(e.get("as_given"), st) for e in ev]
            rows.append([f"Кейс {case}", STACK_RU[st], str(len(ev)),
                         str(statuses.count("demonstrated")), str(statuses.count("absent")),
                         str(sum(1 for v in statuses if v not in ("demonstrated", "absent"))),
                         str(sum(bool(e.get("behaviour_differs")) for e in ev))])
    return table(["Кейс", "Стек", "находок", "показано", "дефекта нет (проверено)", "прочее",
                  "поведение различается"], rows, "llrrrrr")


@block
def stack_differences(ctx: Context) -> str:
    """The findings whose behaviour differs by stack: status on each, severity (the task's stack)."""
    rows = []
    for f in sorted(ctx.findings, key=lambda f: (f.case, f.id)):
        ev = ctx.evidence(f.id) or {}
        if not (ev.get("behaviour_differs") or f.extra.get("stacks")):
            continue
        rows.append([f"[{f.id}]({ctx.card_link(f.id)})", SEVERITY_RU[f.severity], f.title]
                    + [_short(stack_status(ev.get("as_given"), st)) for st in STACKS])
    if not rows:
        raise Missing("no finding is marked as behaving differently by stack")
    return table(["ID", "Серьёзность (по стеку задачи)", "Находка"]
                 + [f"Исходный код: {STACK_SHORT[st]}" for st in STACKS], rows)


# ------------------------------------------------------------------------------ mutation

def _mutation(ctx: Context) -> dict:
    return ctx.result("mutation")["data"]


@block
def mutation_score(ctx: Context) -> str:
    """The recorded mutation run: per side, how many declared mutants the finding's tests caught."""
    payload = ctx.result("mutation")
    d = payload["data"]
    side_ru = {"as_given": "исходный код (дефект исправлен)", "fixed": "исправленный код (дефект возвращён)",
               "all": "всего"}
    rows = []
    for side in ("as_given", "fixed", "all"):
        sc = d["score"].get(side) or {}
        share = "—" if sc.get("score") is None else num(sc["score"], ".1%")
        rows.append([side_ru[side], str(sc.get("total", 0)), str(sc.get("caught", 0)), str(sc.get("survived", 0)),
                     str(sc.get("error", 0)), str(sc.get("timeout", 0)), share])
    per_finding = d.get("findings", {})
    both = sum(1 for v in per_finding.values() if v.get("as_given") == "caught" and v.get("fixed") == "caught")
    scope = ("все объявленные мутанты" if d.get("complete")
             else f"выборка ({_selection_ru(d.get('selection') or {})}), не все объявленные")
    head = (f"Прогон записан {payload['recorded_at']}: {scope}; объявлено мутантов — {d.get('declared', '?')}, "
            f"время прогона — {num(d.get('seconds', 0) / 60, '.0f')} мин. Находок, у которых пойманы все "
            f"мутанты с обеих сторон, — {both} из {len(per_finding)}.")
    out = [head, "", table(["Сторона", "мутантов", "поймано", "выжило", "ошибка", "таймаут", "доля пойманных"],
                            rows, "lrrrrrr")]
    missing = (d.get("coverage") or {}).get("missing") or []
    if missing:
        out += ["", "Без мутанта: " + ", ".join(missing) + "."]
    bad = [mt for mt in d.get("mutants", []) if mt.get("outcome") != "caught"]
    if bad:
        out += ["", "Не пойманы:", ""]
        out += [f"- [{mt['finding']}]({ctx.card_link(mt['finding'])}), {SIDE_RU.get(mt['side'], mt['side'])}, "
                f"`{mt['mutant']}` — {mt.get('why', '')}: **{OUTCOME_RU.get(mt['outcome'], mt['outcome'])}**"
                + (f" ({' '.join(str(mt.get('detail') or '').split())[:200]})" if mt.get("detail") else "")
                for mt in bad]
    return "\n".join(out)


@derived
def mutation_checked(ctx):
    """Whether the recorded mutation run tried every declared mutant or a sample (the overview's words)."""
    d = _mutation(ctx)
    if d.get("complete"):
        return "проверены все"
    return f"проверена выборка из {d['score']['all']['total']} (все правки проверяет главная задача, `make mutation`)"


def _selection_ru(sel: dict) -> str:
    parts = []
    if sel.get("sample"):
        parts.append(f"{sel['sample']} случайных, зерно {sel.get('seed')}")
    for key, ru in (("findings", "находки"), ("sides", "стороны"), ("files", "файлы")):
        if sel.get(key):
            parts.append(f"{ru}: {', '.join(sel[key])}")
    return "; ".join(parts) or "фильтр"


# ------------------------------------------------------------------------ completeness map

@block
def coverage_map(ctx: Context, file: str = "") -> str:
    """Every line of the originals: the findings that cover it, or why there is nothing to say."""
    from . import coverage

    return coverage.coverage_table(file or None, link=lambda fid: f"[{fid}]({ctx.card_link(fid)})")


@block
def coverage_summary(ctx: Context) -> str:
    from . import coverage

    rows = []
    for name, t in coverage.counts().items():
        rows.append([f"`{name}`", str(t["lines"]), str(t["findings"]), str(t["nothing"]), str(t["blank"])])
    return table(["Файл", "строк", "непустых под находками", "непустых, где сказать нечего", "пустых"],
                 rows, "lrrrr")


# ------------------------------------------------------------------------ pages and sources

@block
def page_list(ctx: Context) -> str:
    """Every page of the review that exists, by section (review/pages.yml is the one list)."""
    out, section = [], None
    for p in ctx.pages_in():
        if p["file"] == ctx.current:
            continue
        if p["section"] != section:
            section = p["section"]
            out.append(f"\n**{section}**\n")
        line = f"- [{p['title']}]({ctx.href(p['file'])})"
        if p.get("about"):
            line += f" — {p['about']}"
        out.append(line)
    return "\n".join(out).strip()


@block
def see(ctx: Context, page: str, text: str = "Подробно") -> str:
    """A link to another page, or nothing while that page does not exist yet.

    ``text`` is the lead-in; underscores stand for spaces (marker arguments cannot hold spaces).
    """
    if not ctx.exists(page):
        return ""
    return f"{text.replace('_', ' ')}: [{ctx.page_title(page)}]({ctx.href(page)})."


@block
def provenance(ctx: Context) -> str:
    """Which run each recorded figure comes from: name, date, machine and versions."""
    rows = [[f"`review/data/{name}.json`", payload.get("recorded_at", "?"),
             machine_line(payload).split("; записано")[0]]
            for name, payload in sorted(ctx.data.items())]
    return table(["Данные", "Записано (UTC)", "Машина и версии"], rows)


@block
def machine(ctx: Context, result: str) -> str:
    return f"Машина и версии: {machine_line(ctx.result(result))}."


# --------------------------------------------------------------------- Case 1: throughput

def _tp(ctx: Context) -> dict:
    return ctx.result("case1_throughput")["data"]


@derived
def premise_single_ms(ctx):
    p = _tp(ctx)["premise"]
    return p["t_rr_ms"] + p["t_magic_ms"] + p["t_req_ms"] + p["t_stats_ms"]


@derived
def q1_amdahl_verdict(ctx):
    """What the emulator says about one-section Amdahl (50/s) against the bottleneck law (100/s)."""
    d = _tp(ctx)
    best, amdahl = d["emulator"]["variants"]["original"]["max_measured"], d["premise"]["amdahl_one_section_cap"]
    if best > amdahl:
        return (f"эмулятор ниже поднимается до {num(best, '.0f')} изображений/с — больше {num(amdahl, '.0f')}, "
                "которые допускает «одна секция», так что верен закон узкого места")
    return (f"на этой машине эмулятор не поднялся выше {num(amdahl, '.0f')} изображений/с (лучшая точка — "
            f"{num(best, '.0f')}), и измерение две модели не различает")


@block
def q1_table(ctx: Context) -> str:
    pts = _tp(ctx)["emulator"]["variants"]["original"]["points"]
    rows = [[str(p["N"]), num(min(20 * p["N"], 100)), num(p["images_per_s"], ".1f")] for p in pts]
    return table(["N", "модель условия, изобр./с", "эмулятор, изобр./с"], rows, "rrr")


@block
def q1_real_points(ctx: Context) -> str:
    rs = _tp(ctx)["real_script"]
    pts = ", ".join(f"N = {n} — {num(x, '.1f')}" for n, x in rs["by_threads"].items())
    return f"Измерено на минимально исправленном скрипте, изображений/с: {pts}."


Q2_LIMITS = {"original": "главный поток и GIL", "stats_in_worker": "GIL (цикл магического числа)",
             "vectorized_magic": "главный поток (`send_stats`)",
             "both": "только накладные Python на HTTP и процессор", "process_pool": "ядра машины"}


@block
def q2_variants(ctx: Context) -> str:
    v = _tp(ctx)["emulator"]["variants"]
    rows = []
    for key in ("original", "stats_in_worker", "vectorized_magic", "both", "process_pool"):
        if key not in v:
            continue
        x = v[key]
        best = max(x["points"], key=lambda p: p["images_per_s"])
        cap = "—" if "cap" not in x else ("" if x.get("plateau_reached") else "≥ ") + num(x["cap"])
        rows.append([x["label"], Q2_LIMITS[key], num(x["model_cap"]) if "model_cap" in x else "—", cap,
                     f"{num(best['images_per_s'], '.1f')} ({best['N']})"])
    return table(["вариант", "что остаётся узким местом", "модель с накладными, изобр./с",
                  "плато по измерениям, изобр./с", "лучшая точка, изобр./с (при N)"], rows, "llrrr")


@derived
def main_busy_percent(ctx):
    return 100 * _tp(ctx)["emulator"]["variants"]["original"]["points"][-1]["main_busy_share"]


@derived
def main_busy_at_N(ctx):
    return _tp(ctx)["emulator"]["variants"]["original"]["points"][-1]["N"]


# ---------------------------------------------------------- Case 1: the six designs measured

def _designs(ctx: Context) -> dict:
    return ctx.result("case1_designs")["data"]


@derived
def q2_processes_verdict(ctx):
    """How the original design on processes (d) compared with it on threads (a) in the recorded run."""
    ratio = _designs(ctx)["summary"]["best_ratio_to_a"]
    d = {w: ratio[w]["d_multiprocessing"] for w in ("emulator", "real")}
    e = {w: ratio[w]["e_redesigned"] / ratio[w]["d_multiprocessing"] for w in ("emulator", "real")}
    if all(v < 1 for v in d.values()):
        return "в этом прогоне он медленнее исходного дизайна на потоках"
    if all(v > 1 for v in d.values()):
        return (f"в этом прогоне он быстрее исходного дизайна на потоках (в {num(d['emulator'], '.1f')} раза "
                f"на эмуляторе и в {num(d['real'], '.1f')} — на настоящих изображениях), но медленнее "
                f"переделанного конвейера (e) в {num(e['emulator'], '.1f')} и {num(e['real'], '.1f')} раза")
    return (f"в этом прогоне его отношение к исходному дизайну на потоках — {num(d['emulator'], '.1f')} на "
            f"эмуляторе и {num(d['real'], '.1f')} на настоящих изображениях")


@derived
def limit_target_verdict(ctx):
    """Whether the redesigned pipeline reached 80 % of this machine's limit in the recorded run
    (our own target, «ориентир»: masculine)."""
    return "достигнут" if _designs(ctx)["limit"]["share_of_limit"] >= 0.8 else "не достигнут"


# --------------------------------------------------------------------- Case 1: benchmarks

def _bench(ctx: Context, name: str) -> dict:
    b = ctx.result("benchmarks_case1")["data"]["benchmarks"]
    if name not in b:
        raise Missing(f"benchmark {name} is not in review/data/benchmarks_case1.json")
    return b[name]


@derived
def magic_loop_512_ms(ctx):
    return 1000 * _bench(ctx, "test_magic_loop_as_given[512x384]")["mean"]


@derived
def magic_numpy_512_ms(ctx):
    return 1000 * _bench(ctx, "test_magic_numpy[512x384]")["mean"]


@derived
def magic_speedup_512(ctx):
    return _bench(ctx, "test_magic_loop_as_given[512x384]")["mean"] / _bench(ctx, "test_magic_numpy[512x384]")["mean"]


@derived
def magic_speedup_64(ctx):
    return _bench(ctx, "test_magic_loop_as_given[64x64]")["mean"] / _bench(ctx, "test_magic_numpy[64x64]")["mean"]


@derived
def magic_loop_rounds(ctx):
    return _bench(ctx, "test_magic_loop_as_given[512x384]")["rounds"]


@block
def benchmarks_table(ctx: Context, suite: str = "case1") -> str:
    payload = ctx.result(f"benchmarks_{suite}")
    rows = [[f"`{name}`", s.get("group") or "", num(s["mean"] * 1000, ".2f"), num(s["median"] * 1000, ".2f"),
             num(s["min"] * 1000, ".2f"), str(s["rounds"])]
            for name, s in payload["data"]["benchmarks"].items()]
    return table(["Бенчмарк", "Группа", "Среднее, мс", "Медиана, мс", "Мин, мс", "Раундов"], rows, "llrrrr")


# --------------------------------------------------------- Case 1: the magic loop per stack

MAGIC_COST_RU = {"as_given_rgb": "исходный цикл, цветная картинка (`uint8`)",
                 "as_given_grey": "исходный цикл, серая картинка (`uint8`)",
                 "patched_rgb": "минимально исправленная версия, цветная (каждый пиксель → `int64`)",
                 "patched_grey": "минимально исправленная версия, серая",
                 "earlier_patch_grey_int": "прежний патч: серая картинка, `int()` на пиксель"}


def _magic_cost(ctx: Context, stack: str) -> dict:
    return ctx.result("case1_magic_cost_2020" if stack == "2020" else "case1_magic_cost")["data"]


@block
def magic_cost(ctx: Context) -> str:
    """The magic loop's CPU time per pixel on both stacks (tests/case1/test_c1_patched_fidelity.py)."""
    by_stack = {st: _magic_cost(ctx, st)["ns_per_pixel"] for st in STACKS}
    base = by_stack["2020"]["as_given_rgb"]
    rows = []
    for key, label in MAGIC_COST_RU.items():
        cells = [label] + ["—" if key not in by_stack[st] else num(by_stack[st][key], ".0f") for st in STACKS]
        cells.append(num(by_stack["2020"][key] / base, ".2f") if key in by_stack["2020"] else "—")
        rows.append(cells)
    return table(["цикл", "нс на пиксель: стек задачи", "нс на пиксель: сегодня",
                  "к исходному циклу на цветной (стек задачи)"], rows, "lrrr")


@derived
def magic_loop_2020_s_512x384(ctx):
    """The original loop on a colour 512x384 frame on the task's stack, from its cost per pixel."""
    return _magic_cost(ctx, "2020")["ns_per_pixel"]["as_given_rgb"] * 512 * 384 / 1e9


@derived
def magic_loop_2020_days_1m(ctx):
    """1 M colour 512x384 frames through the original loop, one at a time under the GIL, in days."""
    return magic_loop_2020_s_512x384(ctx) * 1e6 / 86400


@derived
def magic_loop_2020_days_1m_12mp(ctx):
    """The same for 4000x3000 photos (2000x1500 frames after the halving resize)."""
    return _magic_cost(ctx, "2020")["ns_per_pixel"]["as_given_rgb"] * 2000 * 1500 / 1e9 * 1e6 / 86400


@derived
def week_rate_1m(ctx):
    """Images per second that get 1 M images through in a week (question 3)."""
    return 1e6 / (7 * 86400)


@derived
def magic_loop_2020_years_100m(ctx):
    return magic_loop_2020_s_512x384(ctx) * 1e8 / (365.25 * 86400)


@derived
def patched_to_original_rgb_2020(ctx):
    return _magic_cost(ctx, "2020")["ns_per_pixel"]["patched_rgb"] / _magic_cost(ctx, "2020")["ns_per_pixel"]["as_given_rgb"]


@derived
def patched_to_original_grey_2020(ctx):
    return _magic_cost(ctx, "2020")["ns_per_pixel"]["patched_grey"] / _magic_cost(ctx, "2020")["ns_per_pixel"]["as_given_grey"]


@derived
def earlier_patch_to_original_rgb_2020(ctx):
    d = _magic_cost(ctx, "2020")["ns_per_pixel"]
    return d["earlier_patch_grey_int"] / d["as_given_rgb"]


# ------------------------------------------------------------------------- Case 1: memory

def _mem(ctx: Context) -> dict:
    return ctx.result("case1_memory")["data"]


MEMORY_COSTS = {"names": "имя из `os.listdir` (только во время цикла фильтра)",
                "paths": "путь в `images` (строка и место в списке; живёт до конца)",
                "tasks": "задача в очереди пула (без строки пути; с начала обработки убывает)",
                "results": "запись `results` (без строки пути; растёт)",
                "stats": "элементы `elapsed_stats` и `image_size_stats` (растут)",
                "sorted_copy": "копия одного списка в `sorted()` (в самом конце)"}


@block
def memory_costs(ctx: Context) -> str:
    cost = _mem(ctx)["cost_bytes"]
    rows = [[MEMORY_COSTS[k], num(v)] for k, v in cost.items()]
    return table(["структура", "байт на изображение"], rows, "lr")


@block
def memory_timeline(ctx: Context) -> str:
    d = _mem(ctx)
    model = d["timeline_model_gib"]
    rows = [[phase, num(model["1m"][phase], ".2f"), num(model["100m"][phase], ".1f")]
            for phase in model["100m"]]
    return table(["фаза", "1 млн, ГиБ", "100 млн, ГиБ"], rows, "lrr")


@block
def memory_runs(ctx: Context) -> str:
    rows = [[str(r["images"]), num(r["peak_rss_mib"], ".1f"), num(r["fixed_peak_rss_mib"], ".1f")]
            for r in _mem(ctx)["runs"]]
    return table(["изображений", "исходный дизайн (`patched`): пик RSS, МиБ",
                  "переработанный (`fixed`): пик RSS, МиБ"], rows, "rrr")


@block
def json_dump_table(ctx: Context) -> str:
    rows = [[r["способ"], str(r["записей"]), num(r["размер файла, байт"] / 2**20, ".1f"),
             num(r["прирост пика, байт"] / 2**20, ".2f")] for r in _mem(ctx)["json_dump"]["rows"]]
    return table(["способ", "записей", "файл, МиБ", "прирост пиковой памяти, МиБ"], rows, "lrrr")


@derived
def memory_peak_phase(ctx):
    return _mem(ctx)["peak_phase"]


@derived
def memory_100m_verdict(ctx):
    """Where 100 M images run out of memory, from the phase figures and this machine's memory."""
    d = _mem(ctx)
    ram, model = d["machine_memory_gib"], d["timeline_model_gib"]["100m"]
    minutes = num(d["queue_fill_minutes_100m"], ".0f")
    first_over = next((phase for phase, gib in model.items() if gib > ram), None)
    if first_over is None:
        return "На этой машине все фазы помещаются в память."
    if first_over.startswith(("A.", "B.")):
        return ("Память кончается на старте, а не «за дни до конца»: процесс упадёт по памяти (или уйдёт "
                f"в своп), когда на диск не записан ни один результат (они пишутся только в конце), — в фазе «{first_over}»; очередь пула на 100 млн задач "
                f"заполняется не дольше чем за {minutes} мин (скорость измерена с включённым tracemalloc, "
                "то есть с запасом).")
    return f"Память кончается в фазе «{first_over}»: до этого результаты только в памяти."


@derived
def memory_1m_peak_gib(ctx):
    """The original design's memory at its peak phase for 1 M images (the phase model)."""
    return max(_mem(ctx)["timeline_model_gib"]["1m"].values())


@derived
def json_dump_peak_kib(ctx):
    return _mem(ctx)["json_dump"]["extra_peak_bytes_max"] / 1024


# -------------------------------------------------------------------------- Case 2: races

@block
def races_table(ctx: Context) -> str:
    rc = ctx.result("case2_races")["data"]
    rows = [[str(r["clients"]), str(r["rounds"]), str(r["granted"]), str(r["duplicate_grants"]),
             str(r["rounds_with_duplicate"]), str(r["tasks_created"]), str(r["lost_updates"]),
             str(r["rounds_with_lost_update"]), str(r["errors"])]
            for r in sorted(rc["rows"].values(), key=lambda r: r["clients"])]
    return table(["клиентов", "раундов", "выдач (200)", "дублей", "раундов с дублем", "созданий",
                  "потеряно инкрементов", "раундов с потерей", "ошибок"], rows, "r" * 9)


def _rm(ctx: Context) -> dict:
    return ctx.result("case2_race_model")["data"]


@block
def race_window(ctx: Context) -> str:
    mt, mp = _rm(ctx)["model"]["take"], _rm(ctx)["model"]["post"]
    rows = [
        ["что читается", "`SELECT` свободного задания", "`SELECT` пользователя (`tasks_number`)"],
        ["окно одиночного запроса, мс (медиана)", num(mt["w_single_ms"], ".2f"), num(mp["w_single_ms"], ".2f")],
        ["окно при двух одновременных клиентах, мс", num(mt["w_concurrent_ms"], ".2f"),
         num(mp["w_concurrent_ms"], ".2f")],
        ["собственный разброс приходов без jitter ε, мс (медиана)", num(mt["eps_ms_median"], ".2f"),
         num(mp["eps_ms_median"], ".2f")],
        ["окно, подобранное по измеренным вероятностям `w_fit`, мс", num(mt["w_fit_ms"], ".2f"),
         num(mp["w_fit_ms"], ".2f")],
        ["раундов, где «второе чтение раньше первого `COMMIT`» совпало с наблюдаемой гонкой",
         num(mt["agreement_server_stamps"] * 100) + " %", num(mp["agreement_server_stamps"] * 100) + " %"],
    ]
    return table(["", "`/take_free_task` (C2-01)", "`POST /tasks` (C2-02)"], rows, "lrr")


@block
def race_jitter(ctx: Context) -> str:
    mt, mp = _rm(ctx)["model"]["take"], _rm(ctx)["model"]["post"]
    rows = [[num(a["jitter_ms"], "g"), num(a["measured"], ".2f"), num(a["model_uniform"], ".2f"),
             num(a["model_with_spread"], ".2f"), num(b["measured"], ".2f"), num(b["model_uniform"], ".2f"),
             num(b["model_with_spread"], ".2f")] for a, b in zip(mt["points"], mp["points"])]
    return table(["jitter J, мс", "дубль: измерено", "дубль: 1−(1−w/J)²", "дубль: модель с ε",
                  "потеря инкремента: измерено", "потеря: 1−(1−w/J)²", "потеря: модель с ε"], rows, "r" * 7)


def _pct_ci(p, ci) -> str:
    return f"{num(p * 100)} % ({num(ci[0] * 100)}–{num(ci[1] * 100)} %)"


@block
def race_clients(ctx: Context) -> str:
    rows = [[str(r["clients"]), _pct_ci(r["p_duplicate"], r["p_duplicate_ci"]), num(r["duplicates_per_round"], ".2f"),
             str(r["max_same_task"]), _pct_ci(r["p_lost"], r["p_lost_ci"]), num(r["lost_per_round"], ".2f"),
             str(r["errors"])] for r in _rm(ctx)["by_clients"]]
    return table(["клиентов", "раундов с дублем", "дублей за раунд", "макс. ответов с одним заданием",
                  "раундов с потерей инкремента", "потерь за раунд", "ошибок"], rows, "r" * 7)


@block
def growth_tables(ctx: Context) -> str:
    g = ctx.result("case2_growth")["data"]
    t1 = table(["заданий", "операторов `GET /tasks`", "время `GET /tasks`, мс", "`SELECT … JOIN`: операторов / мс"],
               [[str(r["tasks"]), str(r["statements"]), num(r["http_ms"], ".1f"),
                 f"{r['alt_statements']} / {num(r['alt_sql_ms'], '.2f')}"] for r in g["get_tasks"]], "rrrr")
    t2 = table(["пользователей", "операторов `/total_tasks_created`", "время, мс", "`SELECT sum(...)`, мс"],
               [[str(r["users"]), str(r["statements"]), num(r["http_ms"], ".1f"), num(r["alt_sql_ms"], ".2f")]
                for r in g["total_tasks_created"]], "rrrr")
    return t1 + "\n\n" + t2


# -------------------------------------------------------------- Case 2: the API's performance

API_OPERATIONS_RU = {"list": "список", "create": "создание", "claim": "выдача"}


@derived
def api_perf_target_verdict(ctx):
    """Which operations of the fixed service reached the target share of the bare app's throughput."""
    d = ctx.result("case2_api_perf")["data"]
    target = d.get("target_rps_ratio", 0.7)
    met = [op for op, v in d["operations"].items() if v["rps_ratio"] >= target]
    if not met:
        return "не достигнут ни для одной операции"
    if len(met) == len(d["operations"]):
        return "достигнут для всех операций"
    return "достигнут только для: " + ", ".join(API_OPERATIONS_RU.get(op, op) for op in met)


# --------------------------------------------------------------------------- Case 2: load

def _runs(ctx: Context) -> List[dict]:
    d = ctx.result("case2_load")["data"]
    runs = [r for s in d["services"].values() for r in s["servers"].values()]
    if not runs:
        raise Missing("case2_load has no completed run")
    return runs


def _who(r: dict) -> List[str]:
    return [SERVICE_RU.get(r["service"], r["service"]), SERVER_RU.get(r["server"], r["server"])]


@derived
def load_users(ctx):
    return _runs(ctx)[0]["users"]


@derived
def load_run_time_s(ctx):
    return _runs(ctx)[0]["run_time_s"]


@derived
def load_clients_per_account(ctx):
    return _runs(ctx)[0]["clients_per_account"]


@derived
def load_request_timeout_s(ctx):
    return _runs(ctx)[0]["request_timeout_s"]


@derived
def load_threads(ctx):
    return next((r["threads"] for r in _runs(ctx) if r.get("threads")), 4)


@derived
def load_wait_mean_s(ctx):
    w = _runs(ctx)[0]["wait_s"]
    return (w[0] + w[1]) / 2


@derived
def load_rps_bound(ctx):
    return _runs(ctx)[0]["users"] / load_wait_mean_s(ctx)


@block
def load_summary(ctx: Context) -> str:
    rows = [_who(r) + [str(r["requests"]), num(r["rps"], ".1f"), num(r["latency_ms"]["p50"], "g"),
                       num(r["latency_ms"]["p95"], "g"), num(r["latency_ms"]["max"], "g"),
                       f"{r['failures']} ({num(r['failure_ratio'] * 100, '.2f')} %)"] for r in _runs(ctx)]
    return table(["Сервис", "Сервер", "Запросов", "Запросов/с", "p50, мс", "p95, мс", "Максимум, мс",
                  "Неудачных (доля)"], rows, "llrrrrrr")


CLAIM_ROW = "выдача задания"


def _endpoint_key(r: dict, endpoint: str) -> str:
    """One row for the claim, whatever path each service serves it on."""
    if endpoint == r.get("claim_endpoint") or endpoint.endswith(" /take_free_task"):
        return CLAIM_ROW
    return endpoint


def _endpoint(r: dict, key: str) -> Optional[dict]:
    return next((x for e, x in r["endpoints"].items() if _endpoint_key(r, e) == key), None)


@block
def load_endpoints(ctx: Context) -> str:
    runs = _runs(ctx)
    keys = sorted({_endpoint_key(r, e) for r in runs for e in r["endpoints"]}, key=lambda k: (k != CLAIM_ROW, k))
    claims = sorted({e for r in runs for e in r["endpoints"] if _endpoint_key(r, e) == CLAIM_ROW})
    rows = []
    for key in keys:
        row = [f"{key} ({', '.join(f'`{c}`' for c in claims)})" if key == CLAIM_ROW else f"`{key}`"]
        for r in runs:
            x = _endpoint(r, key)
            row.append(f"{x['requests']} / {num(x['failure_ratio'] * 100)} % / {num(x['p95_ms'], 'g')}"
                       if x and x.get("requests") else "—")
        rows.append(row)
    return table(["Эндпоинт"] + [", ".join(_who(r)) for r in runs], rows)


@block
def load_anomalies(ctx: Context) -> str:
    """What taskcheck's checkers find in each load run's recorded history (the same checks)."""
    runs = [r for r in _runs(ctx) if r.get("checker")]
    if not runs:
        raise Missing("case2_load has no checker results (recorded before the load runs used taskcheck)")
    kinds = sorted({k for r in runs for k in r["checker"]["counts"]})
    findings = {a["kind"]: ", ".join(a.get("findings", [])) for r in runs for a in r["checker"].get("anomalies", [])}
    rows = [[f"`{k}`", findings.get(k, "")] + [str(r["checker"]["counts"].get(k, 0)) for r in runs] for k in kinds]
    rows.append(["**всего**", ""] + [f"**{r['checker']['total']}**" for r in runs])
    return table(["Аномалия", "Находки"] + [", ".join(_who(r)) for r in runs], rows, "ll" + "r" * len(runs))


@block
def load_failures(ctx: Context) -> str:
    rows = []
    for r in _runs(ctx):
        k = r["failure_kinds"]
        other = {kind[5:]: n for kind, n in k.items() if kind.startswith("http_") and kind != "http_500"}
        causes = "; ".join(f"`{exc}` — {n}" for exc, n in r["server_exceptions"]["by_kind"].items()) or "нет"
        rows.append(_who(r) + [str(k.get("http_500", 0) + k.get("aborted_transaction", 0)), str(k.get("timeout", 0)),
                               str(k.get("connection_error", 0)),
                               (f"{sum(other.values())} (" + ", ".join(f"{c}: {n}" for c, n in other.items()) + ")")
                               if other else "0", causes])
    return table(["Сервис", "Сервер", "HTTP 500", f"Таймауты (> {num(load_request_timeout_s(ctx), 'g')} с)",
                  "Обрыв соединения", "Прочие коды", "Причины 500 по журналу сервера"], rows, "llrrrll")


@block
def load_consistency(ctx: Context) -> str:
    rows = []
    for r in _runs(ctx):
        db = r["database"]
        rows.append(_who(r) + [str(r["takes"]["ok"]), str(r["takes"]["duplicate_grants"]), str(db["taken_in_db"]),
                               str(db["taken_without_grant_response"]), str(db["tasks_created"]),
                               str(db["tasks_created_acknowledged"]), str(db["sum_tasks_number"]),
                               str(db["lost_counter_updates"]),
                               f"{db['total_counter']} (`{db['total_counter_source']}`)", str(db["lost_total_updates"])])
    return table(["Сервис", "Сервер", "Успешных выдач задания", "Повторных выдач",
                  "Заданий занято в БД", "Занято без успешного ответа", "Заданий создано (БД)",
                  "Из них подтверждено ответом 2xx", "Сумма `tasks_number`", "Потеряно обновлений `tasks_number`",
                  "Общий счётчик", "Потеряно обновлений общего счётчика"], rows, "ll" + "r" * 10)


@block
def load_connections(ctx: Context) -> str:
    rows = []
    for r in _runs(ctx):
        c = r["connections"]
        a = c["after_load"]
        rows.append(_who(r) + [str(a["total"]), str(a["idle_in_transaction"]), str(a["waiting_on_lock"]),
                               num(a["oldest_transaction_s"], ".1f"), str(c["after_stop"])])
    return table(["Сервис", "Сервер", "Соединений после нагрузки", "Из них idle in transaction",
                  "Ждут блокировку", "Самая старая открытая транзакция, с", "Осталось после остановки сервиса"],
                 rows, "llrrrrr")


@block
def load_notes(ctx: Context) -> str:
    """Runs that did not complete and clients whose sign-up failed: said, not hidden."""
    d = ctx.result("case2_load")["data"]
    out = []
    for r in _runs(ctx):
        if r.get("signup_failures"):
            out.append(f"- {', '.join(_who(r))}: у {r['signup_failures']} клиентов из {r['users']} все попытки "
                       f"создать пользователя закончились ошибкой (пользователей в базе: {r['database']['users']}); "
                       "такие клиенты работали от имени уже созданной учётной записи.")
    for name, err in (d.get("errors") or {}).items():
        out.append(f"- Прогон `{name}` не завершился: `{err}`.")
    return "\n".join(out)
