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
             "passes": "исправлено", "fails": "НЕ исправлено (тест упал)", "pending": "ожидается",
             "skipped": "пропущено", "no test": "нет теста"}
STACK_RU = {"2020": "стек задания (Python 3.8, 2020)", "today": "сегодняшний стек"}
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
        return "; ".join(f"{STACK_RU.get(k, k)}: {STATUS_RU.get(v, v)}" for k, v in status.items())
    if status is None:
        return "нет данных"
    return STATUS_RU.get(status, status)


def demonstrated(status) -> bool:
    if isinstance(status, dict):
        return bool(status) and all(v == "demonstrated" for v in status.values())
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
    rows = []
    for case in (1, 2):
        fs = ctx.by_case(case)
        ev = [ctx.evidence(f.id) or {} for f in fs]
        rows.append([f"[Кейс {case}]({ctx.href(CASE_PAGE[case])})"]
                    + [str(sum(f.severity == s for f in fs)) for s in registry.SEVERITIES]
                    + [str(len(fs)), str(sum(demonstrated(e.get("as_given")) for e in ev)),
                       str(sum(e.get("fixed") == "passes" for e in ev))])
    header = ["Кейс"] + [SEVERITY_RU[s] for s in registry.SEVERITIES] + [
        "всего", "показано на исходном коде", "исправлено в новом коде"]
    return table(header, rows, "l" + "r" * (len(header) - 1))


@block
def findings_table(ctx: Context, case: str) -> str:
    rows = []
    for f in ctx.by_case(int(case)):
        ev = ctx.evidence(f.id) or {}
        rows.append([f"[{f.id}]({ctx.card_link(f.id)})", SEVERITY_RU[f.severity],
                     CATEGORY_RU[f.category], f.title, f"{f.lines[0]}–{f.lines[1]}",
                     status_ru(ev.get("as_given")), status_ru(ev.get("fixed"))])
    return table(["ID", "Серьёзность", "Категория", "Находка", "Строки", "Исходный код",
                  "Исправленный код"], rows)


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
        text += " Поведение на стеке задания и на сегодняшнем различается."
    items = [f"- `{t['test']}` ({side}: {t['outcome']})" for side, t in _test_items(ev.get("tests", {}))]
    if items:
        text += (f"\n\n<details markdown=\"1\"><summary>Тесты ({n_tests})</summary>\n\n"
                 + "\n".join(items) + "\n\n</details>")
    return text


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
        parts.append("\n".join(f"- {STACK_RU.get(k, k)}: {str(v).strip()}" for k, v in stacks.items()))
    parts += ["**Как исправить.**", f.fix.strip(), _evidence_text(ctx, f)]
    return "\n\n".join(parts)


@block
def cards(ctx: Context, case: str) -> str:
    """Every finding of one case, in the order of the lines it points at."""
    return "\n\n".join(_card(ctx, f) for f in ctx.by_case(int(case)))


@block
def evidence_matrix(ctx: Context) -> str:
    m = ctx.matrix()
    if not m:
        raise Missing("review/data/evidence.json is not recorded")
    rows = []
    for fid, row in m["findings"].items():
        try:
            title = ctx.finding(fid).title
            link = f"[{fid}]({ctx.card_link(fid)})"
        except Missing:
            title, link = row.get("title", ""), fid
        rows.append([link, SEVERITY_RU.get(row.get("severity"), row.get("severity")), title,
                     status_ru(row.get("as_given")), status_ru(row.get("fixed")),
                     str(sum(1 for _ in _test_items(row.get("tests", {}))))])
    head = (f"Матрица записана {m['generated_at']} (полный прогон тестов"
            f"{'' if m.get('complete_run') else ' — НЕТ, неполный'}).")
    return head + "\n\n" + table(["ID", "Серьёзность", "Находка", "Исходный код", "Исправленный код",
                                  "Тестов"], rows, "lllllr")


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
    return f"Измерено на патченом скрипте, изображений/с: {pts}."


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


@block
def q2_comparison(ctx: Context) -> str:
    rows = []
    for r in _tp(ctx)["real_script"]["comparison"]:
        rows.append([str(r["N"]), "—" if r["patched"] is None else num(r["patched"], ".1f"),
                     "—" if r["fixed"] is None else num(r["fixed"], ".1f"),
                     "—" if r["ratio"] is None else "×" + num(r["ratio"], ".1f")])
    return table(["N", "патченый, изобр./с", "переделанный, изобр./с", "переделанный / патченый"],
                 rows, "rrrr")


@derived
def q2_best_fixed(ctx):
    return max(r["fixed"] for r in _tp(ctx)["real_script"]["comparison"] if r["fixed"] is not None)


@derived
def q2_best_patched(ctx):
    return max(r["patched"] for r in _tp(ctx)["real_script"]["comparison"] if r["patched"] is not None)


@derived
def q2_process_pool_best(ctx):
    return max(p["images_per_s"] for p in _tp(ctx)["emulator"]["variants"]["process_pool"]["points"])


@derived
def fixed_cpu_ms(ctx):
    m = _tp(ctx)["real_script"]["fixed"]["model"]
    return m["client_cpu_ms"] + m["server_cpu_ms"]


@derived
def main_busy_percent(ctx):
    return 100 * _tp(ctx)["emulator"]["variants"]["original"]["points"][-1]["main_busy_share"]


@derived
def main_busy_at_N(ctx):
    return _tp(ctx)["emulator"]["variants"]["original"]["points"][-1]["N"]


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
                f"в своп) ещё до первого результата — в фазе «{first_over}»; очередь пула на 100 млн задач "
                f"заполняется не дольше чем за {minutes} мин (скорость измерена с включённым tracemalloc, "
                "то есть с запасом).")
    return f"Память кончается в фазе «{first_over}»: до этого результаты только в памяти."


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


def _endpoint(r: dict, key: str) -> Optional[dict]:
    if key == "GET/POST /take_free_task":
        return r["endpoints"].get("GET /take_free_task") or r["endpoints"].get("POST /take_free_task")
    return r["endpoints"].get(key)


@block
def load_endpoints(ctx: Context) -> str:
    runs = _runs(ctx)
    keys = sorted({"GET/POST /take_free_task" if e.endswith(" /take_free_task") else e
                   for r in runs for e in r["endpoints"]})
    rows = []
    for key in keys:
        row = [f"`{key}`"]
        for r in runs:
            x = _endpoint(r, key)
            row.append(f"{x['requests']} / {num(x['failure_ratio'] * 100)} % / {num(x['p95_ms'], 'g')}"
                       if x and x.get("requests") else "—")
        rows.append(row)
    return table(["Эндпоинт"] + [", ".join(_who(r)) for r in runs], rows)


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
    return table(["Сервис", "Сервер", "Успешных ответов `take_free_task`", "Повторных выдач",
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
                               str(a["oldest_transaction_s"]), str(c["after_stop"])])
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
