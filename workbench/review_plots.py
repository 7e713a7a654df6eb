"""The review's plots, drawn from the recorded data (review/data) into review/img/*.svg.

Output is deterministic (fixed SVG ids, no date, text kept as text), so the staleness check can
compare a fresh drawing with the committed file byte for byte. Each plot is one function that
takes the render context and draws on a new figure; ``draw_all`` writes (or checks) them.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Dict, List

PLOTS: Dict[str, Callable] = {}
# The plots a page shows; a plot whose data is not recorded stops the render (pages link them).
STYLE = {"svg.hashsalt": "workbench-review", "svg.fonttype": "none", "font.family": "DejaVu Sans",
         "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100,
         "path.simplify": False}
METADATA = {"Date": None, "Creator": "workbench.review_plots", "Format": None, "Type": None}


def plot(filename: str):
    def register(func):
        PLOTS[filename] = func
        return func
    return register


def _figure(size=(7.0, 3.6)):
    from matplotlib.figure import Figure
    return Figure(figsize=size)


def render_svg(func: Callable, ctx) -> bytes:
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    with matplotlib.rc_context(STYLE):
        fig = func(ctx)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata=METADATA)
    plt.close(fig)  # figures drawn through pyplot (workbench.case1_scale) are kept by it until closed
    return buf.getvalue().encode("utf-8")


def draw_all(ctx, folder: Path, check: bool = False) -> List[str]:
    """Draw every plot; return the files that changed (with ``check``: that would change)."""
    changed = []
    if not check:
        folder.mkdir(parents=True, exist_ok=True)
    for filename, func in PLOTS.items():
        target = folder / filename
        try:
            svg = render_svg(func, ctx)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            from .review import RenderError
            raise RenderError(f"plot {filename}: {type(exc).__name__}: {exc}") from exc
        if not target.is_file() or target.read_bytes() != svg:
            changed.append(f"{folder.name}/{filename}")
            if not check:
                target.write_bytes(svg)
    return changed


# ----------------------------------------------------------------------------------- Case 1

@plot("case1_threads.svg")
def threads_model_vs_measured(ctx):
    d = ctx.result("case1_throughput")["data"]
    p = d["premise"]
    orig = d["emulator"]["variants"]["original"]
    n_max = max(16, max(pt["N"] for pt in orig["points"]))
    ns = list(range(1, n_max + 1))
    cycle = p["t_rr_ms"] + p["t_magic_ms"] + p["t_req_ms"]
    fig = _figure()
    ax = fig.subplots()
    ax.plot(ns, [min(1000 * n / cycle, p["cap_images_per_s"]) for n in ns], "-", lw=2, color="C0",
            label=f"модель условия: min(N/{cycle:.0f} мс, 1/{p['t_magic_ms']:.0f} мс)")
    ax.axhline(p["amdahl_one_section_cap"], color="grey", ls=":", lw=1)
    ax.annotate("Амдал с одной секцией 20 мс: 50/с", (n_max, p["amdahl_one_section_cap"]),
                ha="right", va="bottom", fontsize=8, color="grey")
    ax.plot([pt["N"] for pt in orig["points"]], [pt["images_per_s"] for pt in orig["points"]], "o-",
            color="C3", label="эмулятор с ценами условия (измерено)")
    rs = d.get("real_script") or {}
    if rs.get("by_threads"):
        pts = sorted((int(k), v) for k, v in rs["by_threads"].items())
        ax.plot([k for k, _ in pts], [v for _, v in pts], "s--", color="C2",
                label="минимально исправленный скрипт, 640×480 JPEG (измерено)")
    ax.set(xlabel="число потоков пула N", ylabel="изображений/с", xlim=(0, n_max + 0.5),
           ylim=(0, p["cap_images_per_s"] * 1.25),
           title="Вопрос 1: модель узкого места и измерение")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


@plot("case1_designs.svg")
def designs(ctx):
    """Question 2 measured: images/s against concurrency for the six designs (workbench.case1_scale)."""
    from .case1_scale import plot_designs
    return plot_designs(ctx.result("case1_designs")["data"]["summary"])


@plot("case1_machines_premise.svg")
def machines_premise(ctx):
    """Question 3: the N-machine model under the task's premises."""
    from .case1_scale import plot_machines
    return plot_machines(ctx.result("case1_machines")["data"]["models"]["premise"])


@plot("case1_machines_measured.svg")
def machines_measured(ctx):
    """Question 3: the N-machine model with the costs measured on 4000x3000 photos."""
    from .case1_scale import plot_machines
    return plot_machines(ctx.result("case1_machines")["data"]["models"]["measured"])


@plot("case1_memory.svg")
def memory_growth(ctx):
    d = ctx.result("case1_memory")["data"]
    runs = d["runs"]
    fig = _figure((7.6, 3.4))
    left, right = fig.subplots(1, 2)
    xs = [r["images"] for r in runs]
    left.plot(xs, [r["peak_rss_mib"] for r in runs], "o-", color="C3", label="исходный дизайн (patched)")
    left.plot(xs, [r["fixed_peak_rss_mib"] for r in runs], "s-", color="C2", label="переработанный (fixed)")
    left.set(xlabel="изображений в каталоге", ylabel="пиковая память процесса, МиБ", ylim=(0, None),
             title="Пик памяти растёт с числом изображений")
    left.legend(fontsize=8)
    tl = d["timeline_measured"]
    phases = []
    for t, mib, phase in tl["points"]:
        if not phases or phases[-1][0] != phase:
            phases.append((phase, [], []))
        phases[-1][1].append(t)
        phases[-1][2].append(mib)
    for k, (phase, ts, ms) in enumerate(phases):
        right.plot(ts, ms, ".", ms=2.5, color=f"C{k}", label=phase)
    right.set(xlabel="секунды от старта", ylabel="память сверх исходной, МиБ",
              title=f"По ходу прогона: {tl['images']} изображений")
    right.legend(fontsize=7, loc="lower right", markerscale=3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------- Case 2

@plot("case2_races.svg")
def races_by_clients(ctx):
    rows = ctx.result("case2_race_model")["data"]["by_clients"]
    fig = _figure()
    ax = fig.subplots()
    xs = [r["clients"] for r in rows]
    for key, color, label in (("p_duplicate", "C3", "раунд с дублем выдачи (C2-01)"),
                              ("p_lost", "C0", "раунд с потерянным инкрементом (C2-02)")):
        ys = [100 * r[key] for r in rows]
        lo = [100 * (r[key] - r[key + "_ci"][0]) for r in rows]
        hi = [100 * (r[key + "_ci"][1] - r[key]) for r in rows]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, color=color, label=label)
    ax.set(xscale="log", xlabel="одновременных клиентов", ylabel="доля раундов, %", ylim=(0, 105),
           title="Кейс 2 как есть: как часто гонка случается (95 % интервал Уилсона)")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


@plot("case2_load.svg")
def load_as_given_vs_fixed(ctx):
    from .review_context import SERVICE_RU, _runs
    runs = _runs(ctx)
    short_server = {"gunicorn": "gunicorn", "flask-dev": "Flask dev"}
    labels = [f"{SERVICE_RU.get(r['service'], r['service'])}\n{short_server.get(r['server'], r['server'])}"
              for r in runs]
    colors = ["C3" if r["service"] == "as_given" else "C2" for r in runs]
    fig = _figure((7.6, 3.4))
    left, right = fig.subplots(1, 2)
    xs = range(len(runs))
    left.bar([x - 0.2 for x in xs], [r["latency_ms"]["p50"] for r in runs], 0.4, color=colors, alpha=0.55,
             label="p50")
    left.bar([x + 0.2 for x in xs], [r["latency_ms"]["p95"] for r in runs], 0.4, color=colors, label="p95")
    left.set(ylabel="задержка, мс", title="Задержка (p50 светлее, p95)")
    right.bar(list(xs), [100 * r["failure_ratio"] for r in runs], 0.6, color=colors)
    right.set(ylabel="неудачных запросов, %", title="Ошибки под одной нагрузкой")
    for ax in (left, right):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7)
    fig.tight_layout()
    return fig
