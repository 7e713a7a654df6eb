"""The recorded history: every operation a client ran, with its request, response and timings.

A history is a JSON-lines file. The first line is the ``meta`` record (target, adapter, limits,
versions); then, in completion order, ``op`` records (one HTTP exchange each), ``nemesis``
records (a fault started or healed) and ``snapshot`` records (what the optional deep checks read
from the database and the image folder). ``--replay`` reads the file back and runs only the
checkers, so everything a checker needs is in the file: the raw exchange (for the report's
examples and for scanning bodies) and the semantic values the adapter read from it (task ids,
credentials, totals), so that no checker has to know the service's protocol.

Outcome types follow Jepsen: ``ok`` (2xx: it happened), ``fail`` (4xx: by the meaning of the
status it did not happen, which the checkers verify against later reads) and ``info``
(5xx, timeout, connection error: indeterminate, it may or may not have happened).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

FORMAT_VERSION = 1
BODY_LIMIT = 1 << 20  # response text kept per op; larger bodies are cut and marked
REQUEST_BODY_LIMIT = 4096  # request bodies (hostile ones can be huge) are summarised beyond this

OK, FAIL, INFO = "ok", "fail", "info"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def outcome(status: Optional[int], error: Optional[str]) -> str:
    """Jepsen's type of a finished HTTP exchange, by the meaning of its status alone."""
    if error is not None or status is None or status >= 500:
        return INFO
    if status >= 400:
        return FAIL
    return OK


@dataclass
class Op:
    """One HTTP exchange and what it meant.

    ``args`` holds the semantic inputs (``task_id``, ``owner`` of the target, ``email``,
    ``meta``, ``image_sha256``, ``case``/``expect``/``findings`` of a hostile input, ``as`` for a
    forged identity); ``value`` the outputs the adapter read (``task_id``, ``user_id``,
    ``credential``, ``task_ids``, ``total``, ``none_free``, ``sha256``, ``content_type``, ``meta``).
    """

    index: int
    process: str
    workload: str
    action: str
    actor: Optional[str]
    t0: float
    t1: float
    request: Dict[str, Any]
    status: Optional[int] = None
    response: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    error_text: Optional[str] = None
    type: str = INFO
    args: Dict[str, Any] = field(default_factory=dict)
    value: Dict[str, Any] = field(default_factory=dict)
    tags: Dict[str, Any] = field(default_factory=dict)

    @property
    def latency(self) -> float:
        return self.t1 - self.t0

    @property
    def hostile(self) -> bool:
        return self.args.get("input") == "hostile"

    def to_json(self) -> dict:
        d = asdict(self)
        d["kind"] = "op"
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Op":
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**d)

    def exchange(self, limit: int = 600) -> dict:
        """A short request/response pair for reports."""
        req = self.request
        line = f"{req.get('method', '?')} {req.get('path', '?')}"
        if req.get("query"):
            line += "?" + "&".join(f"{k}={v}" for k, v in req["query"].items())
        body = req.get("json", req.get("body"))
        if body is not None:
            text = json.dumps(body, ensure_ascii=False) if not isinstance(body, str) else body
            line += " " + (text if len(text) <= 160 else text[:160] + "…")
        if self.error is not None:
            answer = f"{self.error}: {self.error_text or ''}".strip()
        else:
            answer = f"{self.status}"
            text = self.response.get("text")
            if text:
                text = " ".join(text.split())
                answer += " " + (text if len(text) <= limit else text[:limit] + "…")
            elif self.response.get("sha256"):
                answer += f" <{self.response.get('length', 0)} bytes, sha256 {self.response['sha256'][:12]}>"
        return {"op": self.index, "actor": self.actor, "request": line, "response": answer,
                "latency_s": round(self.latency, 3)}


class History:
    """The records of one run, in memory; thread-safe appends, optional streaming to a file."""

    def __init__(self, meta: Optional[dict] = None, path: Optional[Path] = None):
        self.meta: dict = dict(meta or {})
        self.ops: List[Op] = []
        self.events: List[dict] = []  # nemesis and snapshot records
        self._lock = threading.Lock()
        self._next = 0
        self._file = None
        self._origin = time.monotonic()
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8")
            self._write({"kind": "meta", "format": FORMAT_VERSION, **self.meta})

    # ------------------------------------------------------------------ recording

    def now(self) -> float:
        """Seconds since the history started (monotonic clock)."""
        return time.monotonic() - self._origin

    def next_index(self) -> int:
        with self._lock:
            i = self._next
            self._next += 1
            return i

    def add(self, op: Op) -> Op:
        with self._lock:
            self.ops.append(op)
            self._write(op.to_json())
        return op

    def event(self, kind: str, **data: Any) -> dict:
        record = {"kind": kind, "t": round(self.now(), 6), **data}
        with self._lock:
            self.events.append(record)
            self._write(record)
        return record

    def _write(self, record: dict) -> None:
        if self._file is not None:
            # ASCII escapes: hostile inputs may hold lone surrogates that UTF-8 cannot encode.
            self._file.write(json.dumps(record, default=str) + "\n")
            self._file.flush()

    def finish(self) -> None:
        """Write the meta record again, completed (a replay takes the last one)."""
        with self._lock:
            self._write({"kind": "meta", "format": FORMAT_VERSION, **self.meta})

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # ------------------------------------------------------------------ reading

    def write(self, path: Path) -> Path:
        """The whole history as JSON lines (for drivers that record in memory)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in self.records():
                f.write(json.dumps(record, default=str) + "\n")
        tmp.replace(path)
        return path

    def records(self) -> Iterator[dict]:
        yield {"kind": "meta", "format": FORMAT_VERSION, **self.meta}
        merged = [(op.t1, 0, op.to_json()) for op in self.ops]
        merged += [(e["t"], 1, e) for e in self.events]
        for _, _, record in sorted(merged, key=lambda x: (x[0], x[1])):
            yield record

    @classmethod
    def read(cls, path: Path) -> "History":
        history = cls()
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not a JSON record ({exc})") from None
                history.load_record(record, where=f"{path}:{n}")
        return history

    def load_record(self, record: dict, where: str = "") -> None:
        kind = record.get("kind")
        if kind == "meta":
            if record.get("format", FORMAT_VERSION) > FORMAT_VERSION:
                raise ValueError(f"{where}: history format {record['format']} is newer than "
                                 f"this checker ({FORMAT_VERSION})")
            self.meta = {k: v for k, v in record.items() if k not in ("kind", "format")}
        elif kind == "op":
            op = Op.from_json(record)
            self.ops.append(op)
            self._next = max(self._next, op.index + 1)
        elif kind in ("nemesis", "snapshot", "note"):
            self.events.append(record)
        else:
            raise ValueError(f"{where}: unknown record kind {kind!r}")

    # ------------------------------------------------------------------ views for checkers

    def by_action(self, *actions: str) -> List[Op]:
        return [op for op in self.ops if op.action in actions]

    def sorted_ops(self) -> List[Op]:
        return sorted(self.ops, key=lambda op: (op.t0, op.index))

    def snapshots(self) -> List[dict]:
        return [e for e in self.events if e.get("kind") == "snapshot"]

    def fault_windows(self) -> List[dict]:
        """[{fault, start, stop}] from the nemesis records; an unhealed fault lasts to the end."""
        open_: Dict[str, float] = {}
        windows = []
        for e in sorted((e for e in self.events if e.get("kind") == "nemesis"), key=lambda e: e["t"]):
            if e.get("phase") == "start":
                open_[e["fault"]] = e["t"]
            elif e.get("phase") == "stop" and e["fault"] in open_:
                windows.append({"fault": e["fault"], "start": open_.pop(e["fault"]), "stop": e["t"],
                                "recover_s": e.get("recover_s", 0.0)})
        end = max([op.t1 for op in self.ops] or [0.0]) + 1.0
        windows += [{"fault": f, "start": t, "stop": end, "recover_s": 0.0} for f, t in open_.items()]
        return windows


def in_window(op: Op, windows: Iterable[dict]) -> Optional[dict]:
    """The fault window (extended by its recovery grace) that ``op`` overlaps, if any."""
    for w in windows:
        if op.t0 <= w["stop"] + w.get("recover_s", 0.0) and op.t1 >= w["start"]:
            return w
    return None


def summarise_body(body: Any) -> Any:
    """A request body as recorded: kept when small, else its length and hash (hostile sizes)."""
    if isinstance(body, (bytes, bytearray)):
        data = bytes(body)
        if len(data) <= REQUEST_BODY_LIMIT:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"bytes": len(data), "sha256": sha256(data)}
    text = json.dumps(body, ensure_ascii=False, default=str)
    if len(text) <= REQUEST_BODY_LIMIT:
        return body
    return {"json_chars": len(text), "sha256": sha256(text.encode("utf-8")), "head": text[:200]}
