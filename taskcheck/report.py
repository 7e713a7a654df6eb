"""The report: what the checkers found, as Markdown and as a self-contained HTML page.

Both are rendered from one ``summary`` dict (``summarise``), which is also what the command
writes as ``result.json`` and what the review records: anomaly kinds with their count, the
review's finding IDs and one example request/response pair each; coverage; warnings; faults.
"""
from __future__ import annotations

import html
import re
from collections import defaultdict
from typing import Dict, List, Optional

from . import checks
from .history import FAIL, INFO, OK, History

EXAMPLES_PER_KIND = 3


def summarise(history: History, result: Optional[dict] = None) -> dict:
    """The report's data: the checkers' result plus examples and per-workload figures."""
    result = result if result is not None else checks.run(history)
    by_index = {op.index: op for op in history.ops}
    rows = []
    grouped: Dict[str, List[dict]] = defaultdict(list)
    for a in result["anomalies"]:
        grouped[a["kind"]].append(a)
    for kind in checks.KINDS:
        found = grouped.get(kind)
        if not found:
            continue
        findings = sorted({f for a in found for f in a["findings"]})
        examples = []
        for a in found[:EXAMPLES_PER_KIND]:
            ex = {"detail": a["detail"]}
            if a["ops"] and a["ops"][0] in by_index:
                ex.update(by_index[a["ops"][0]].exchange())
            examples.append(ex)
        rows.append({"kind": kind, "title": checks.KINDS[kind].title, "count": result["counts"][kind],
                     "findings": findings, "examples": examples, "meaning": checks.KINDS[kind].meaning})
    workloads: Dict[str, Dict[str, int]] = defaultdict(lambda: {OK: 0, FAIL: 0, INFO: 0})
    for op in history.ops:
        workloads[op.workload or "-"][op.type] += 1
    return {
        "target": history.meta.get("target"), "api": history.meta.get("api"),
        "started_at": history.meta.get("started_at"), "params": history.meta.get("params", {}),
        "stopped_early": history.meta.get("stopped_early"),
        "anomalies": rows, "total": sum(r["count"] for r in rows),
        "counts": result["counts"], "coverage": result["coverage"], "warnings": result["warnings"],
        "workloads": {k: dict(v) for k, v in sorted(workloads.items())},
        "faults": history.fault_windows(),
        "notes": [e for e in history.events if e.get("kind") == "note"],
    }


# Markdown punctuation that makes markup inside a line (every value is put on one line, after
# a prefix, so nothing can start a block): emphasis, strike-through, links and images, code,
# table pipes, and the ``:`` of bare URLs that GFM turns into links. ``&``, ``<`` and ``>``
# become entities (HTML, autolinks, entities).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()!|~:])")


def _cell(text: object) -> str:
    """Any text as inert Markdown on one line: what the server sent (and so anything a history
    holds) may carry HTML, links, images or table pipes; none of it may become markup in the
    report. HTML's own characters become entities, Markdown's are backslash-escaped."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _code(text: object, limit: int = 240) -> str:
    """A code span: inert by itself, once it cannot be closed early (no backtick inside) and
    cannot end a table cell (no bare pipe)."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def markdown(s: dict) -> str:
    c = _cell  # every value below may come from the server or from a history file
    out = [f"# taskcheck report: {c(s['target'])}", ""]
    out.append(f"Adapter {_code(s['api'])}; started {c(s['started_at'])}; "
               f"{c(s['coverage']['ops'])} requests recorded.")
    if s.get("stopped_early"):
        out.append(f"\n**Stopped early:** {c(s['stopped_early'])}.")
    out += ["", "## Summary", ""]
    if not s["anomalies"]:
        out.append("No anomaly found." + (" (See the warnings: some checks had nothing to check.)"
                                          if s["warnings"] else ""))
    else:
        out += ["| Anomaly | Count | Example request → response | Finding |", "|---|---|---|---|"]
        for r in s["anomalies"]:
            ex = r["examples"][0]
            pair = (f"{_code(ex['request'], 120)} → {_code(ex['response'], 160)}" if "request" in ex
                    else c(ex["detail"]))
            out.append(f"| {c(r['title'])} ({_code(r['kind'])}) | {c(r['count'])} | {pair} | "
                       f"{c(', '.join(r['findings']))} |")
    if s["warnings"]:
        out += ["", "## Warnings", ""] + [f"- {c(w)}" for w in s["warnings"]]
    out += ["", "## Coverage", "", "| What the checkers looked at | Count |", "|---|---|"]
    out += [f"| {c(k.replace('_', ' '))} | {c(v)} |" for k, v in s["coverage"].items()]
    out += ["", "## Requests by workload", "", "| Workload | ok (2xx) | fail (4xx) | info (5xx, timeout, dropped) |",
            "|---|---|---|---|"]
    out += [f"| {c(w)} | {c(v[OK])} | {c(v[FAIL])} | {c(v[INFO])} |" for w, v in s["workloads"].items()]
    if s["faults"]:
        out += ["", "## Faults", "", "| Fault | From, s | Healed, s | Grace, s |", "|---|---|---|---|"]
        out += [f"| {c(f['fault'])} | {f['start']:.2f} | {f['stop']:.2f} | {f.get('recover_s', 0):.1f} |"
                for f in s["faults"]]
    for n in s["notes"]:
        out.append(f"\nNote: {c(n.get('text'))}")
    if s["anomalies"]:
        out += ["", "## Details", ""]
        for r in s["anomalies"]:
            out += [f"### {c(r['title'])} ({_code(r['kind'])}, {c(', '.join(r['findings']))})", "",
                    c(r["meaning"]) + ".", ""]
            for ex in r["examples"]:
                out.append(f"- {c(ex['detail'])}")
                if "request" in ex:
                    out.append(f"  - op {c(ex['op'])} by {c(ex['actor'] or 'anonymous')}, {c(ex['latency_s'])} s: "
                               f"{_code(ex['request'])} → {_code(ex['response'])}")
            out.append("")
    out += ["", "Replay the checkers: `python -m taskcheck --replay history.jsonl`.", ""]
    return "\n".join(out)


_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;width:100%}th,td{border:1px solid #ccc;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:13px;background:#f6f6f6;
padding:0 .2rem;word-break:break-all}.bad{color:#a00;font-weight:600}.ok{color:#070;font-weight:600}"""


def _h(text: object) -> str:
    return html.escape(str(text))


def html_page(s: dict) -> str:
    e = _h
    parts = [f"<!doctype html><html lang='en'><meta charset='utf-8'><title>taskcheck: {e(s['target'])}</title>",
             f"<style>{_CSS}</style><body><h1>taskcheck report: {e(s['target'])}</h1>",
             f"<p>Adapter <code>{e(s['api'])}</code>; started {e(s['started_at'])}; "
             f"{e(s['coverage']['ops'])} requests recorded.</p>"]
    if s.get("stopped_early"):
        parts.append(f"<p class='bad'>Stopped early: {e(s['stopped_early'])}.</p>")
    parts.append("<h2>Summary</h2>")
    if not s["anomalies"]:
        parts.append("<p class='ok'>No anomaly found.</p>")
    else:
        parts.append("<table><tr><th>Anomaly</th><th>Count</th><th>Example request → response</th>"
                     "<th>Finding</th></tr>")
        for r in s["anomalies"]:
            ex = r["examples"][0]
            pair = (f"<code>{e(ex['request'])}</code> → <code>{e(ex['response'][:400])}</code>"
                    if "request" in ex else e(ex["detail"]))
            parts.append(f"<tr><td class='bad'>{e(r['title'])} <small>({e(r['kind'])})</small></td>"
                         f"<td>{e(r['count'])}</td><td>{pair}<br><small>{e(ex['detail'])}</small></td>"
                         f"<td>{e(', '.join(r['findings']))}</td></tr>")
        parts.append("</table>")
    if s["warnings"]:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in s["warnings"]) + "</ul>")
    parts.append("<h2>Coverage</h2><table><tr><th>What the checkers looked at</th><th>Count</th></tr>"
                 + "".join(f"<tr><td>{e(k.replace('_', ' '))}</td><td>{e(v)}</td></tr>"
                           for k, v in s["coverage"].items()) + "</table>")
    parts.append("<h2>Requests by workload</h2><table><tr><th>Workload</th><th>ok (2xx)</th>"
                 "<th>fail (4xx)</th><th>info (5xx, timeout, dropped)</th></tr>"
                 + "".join(f"<tr><td>{e(w)}</td><td>{e(v[OK])}</td><td>{e(v[FAIL])}</td><td>{e(v[INFO])}</td></tr>"
                           for w, v in s["workloads"].items()) + "</table>")
    if s["faults"]:
        parts.append("<h2>Faults</h2><table><tr><th>Fault</th><th>From, s</th><th>Healed, s</th></tr>"
                     + "".join(f"<tr><td>{e(f['fault'])}</td><td>{f['start']:.2f}</td><td>{f['stop']:.2f}</td></tr>"
                               for f in s["faults"]) + "</table>")
    for r in s["anomalies"]:
        parts.append(f"<h3>{e(r['title'])} ({e(r['kind'])}, {e(', '.join(r['findings']))})</h3>"
                     f"<p>{e(r['meaning'])}.</p><ul>")
        for ex in r["examples"]:
            item = e(ex["detail"])
            if "request" in ex:
                item += (f"<br>op {e(ex['op'])} by {e(ex['actor'] or 'anonymous')}, {e(ex['latency_s'])} s: "
                         f"<code>{e(ex['request'])}</code> → <code>{e(ex['response'])}</code>")
            parts.append(f"<li>{item}</li>")
        parts.append("</ul>")
    parts.append("<p>Replay the checkers: <code>python -m taskcheck --replay history.jsonl</code>.</p></body></html>")
    return "\n".join(parts)
