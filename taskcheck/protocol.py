"""How a task service speaks HTTP: one description per service, used by every driver.

The checker's workloads, the Locust load runs and the deep checks never branch on which service
they talk to; they ask a ``Protocol`` for the path, the method, how identity is sent and where an
id, a token or a total sits in an answer. Three come built in:

* ``original`` — the service as given: identity as ``?user_id=<id>``, ``GET /take_free_task``
  (404 when nothing is free), ``GET /tasks`` a bare JSON array, ``metadata`` in answers; its
  tables (read by the deep checks) are ``"user"`` and ``task``;
* ``fixed`` — the redesigned API (CONTRIBUTING, "one Case 2 API"): the token from
  ``POST /users`` as ``Authorization: Bearer``, ``POST /tasks/claim`` (200 with the task, 204
  when nothing is free), ``GET /tasks`` a page ``{"items", "next"}``; tables ``users``, ``task``;
* ``fixed-take`` — the fixed service before the claim moved: ``POST /take_free_task``, 404.

Any other shape is a small mapping file (YAML or JSON) that ``extends`` one of these and
overrides what differs; see ``examples/half_fixed.yaml`` and ``load_mapping``. Paths to a value in
an answer are dotted (``task.id``), a list means "the first that is present", and
``header:Location`` reads the trailing number of a response header.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

AUTH_STYLES = ("query", "header")

_BASE: Dict[str, Any] = {
    "name": "original",
    "auth": {"style": "query", "name": "user_id", "scheme": "", "credential": "id"},
    "users": {
        "create": "POST /users",
        "delete": "DELETE /users/{user_id}",
        "email_field": "email",
        "id": ["id"],
    },
    "tasks": {
        "list": "GET /tasks",
        "list_items": None,  # None: the answer is the JSON array itself
        "list_next": None,  # field holding the cursor of the next page (None: no pages)
        "list_after_param": "after",
        "create": "POST /tasks",
        "meta_field": "meta",
        "image_field": "image",
        "id": ["id"],
        "meta": ["metadata", "meta"],
        "owner": ["owner.id", "owner_id", "owner"],
        "get": "GET /tasks/{task_id}",
        "image": "GET /tasks/{task_id}/image",
        "delete": "DELETE /tasks/{task_id}",
    },
    "claim": {"endpoint": "GET /take_free_task", "none_free": [404], "id": ["id", "task.id"]},
    "total": {"endpoint": "GET /total_tasks_created", "field": ["total_tasks_created"], "auth": True},
    "deep": {
        # The service's tables, as SQL identifiers (quoted where they must be: the original
        # names its users table "user", a reserved word, C2-38); the queries name them as
        # {users_table} and {tasks_table}.
        "users_table": '"user"',
        "tasks_table": "task",
        "tasks_sql": "SELECT id, owner_id FROM {tasks_table}",
        "users_sql": "SELECT id, tasks_number FROM {users_table}",
        "file_pattern": r"^(\d+)\.[A-Za-z0-9]+$",
        "ignore_files": r"^\.",  # temporary uploads of the fixed service
    },
}

_FIXED_OVERRIDES: Dict[str, Any] = {
    "name": "fixed",
    "auth": {"style": "header", "name": "Authorization", "scheme": "Bearer", "credential": "token"},
    "tasks": {"list_items": "items", "list_next": "next", "meta": ["meta", "metadata"]},
    "claim": {"endpoint": "POST /tasks/claim", "none_free": [204]},
    "deep": {"users_table": "users"},
}

_FIXED_TAKE_OVERRIDES: Dict[str, Any] = {
    "name": "fixed-take",
    "claim": {"endpoint": "POST /take_free_task", "none_free": [404]},
}


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


BUILTIN: Dict[str, dict] = {
    "original": _BASE,
    "fixed": _merge(_BASE, _FIXED_OVERRIDES),
}
BUILTIN["fixed-take"] = _merge(BUILTIN["fixed"], _FIXED_TAKE_OVERRIDES)


class MappingError(ValueError):
    """A mapping file or an override that does not describe a usable protocol."""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str

    @classmethod
    def parse(cls, text: Any, where: str) -> "Endpoint":
        if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z]+ /\S*", text.strip()):
            raise MappingError(f"{where}: expected 'METHOD /path', got {text!r}")
        method, path = text.strip().split(" ", 1)
        for name in re.findall(r"{(\w+)}", path):
            if name not in ("task_id", "user_id"):
                raise MappingError(f"{where}: unknown placeholder {{{name}}} (task_id, user_id)")
        return cls(method.upper(), path)

    def url_path(self, **values: Any) -> str:
        return self.path.format(**values)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _paths(value: Any, where: str) -> Tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, str) and p for p in items):
        raise MappingError(f"{where}: expected a field path or a list of them, got {value!r}")
    return tuple(items)


def read_path(body: Any, path: str, headers: Optional[dict] = None) -> Any:
    """The value at a dotted ``path`` in a JSON body (None when absent); ``header:NAME`` reads
    the trailing integer of a response header."""
    if path.startswith("header:"):
        value = (headers or {}).get(path[7:].lower())
        m = re.search(r"(\d+)\D*$", value or "")
        return int(m.group(1)) if m else None
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def first(body: Any, paths: Sequence[str], headers: Optional[dict] = None) -> Any:
    for path in paths:
        value = read_path(body, path, headers)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class Protocol:
    """Everything about a service's HTTP shape that a client action needs."""

    name: str
    auth_style: str
    auth_name: str
    auth_scheme: str
    credential_field: Tuple[str, ...]
    create_user: Endpoint
    delete_user: Endpoint
    email_field: str
    user_id_field: Tuple[str, ...]
    list_tasks: Endpoint
    list_items: Optional[str]
    list_next: Optional[str]
    list_after_param: str
    create_task: Endpoint
    meta_field: str
    image_field: str
    task_id_field: Tuple[str, ...]
    task_meta_field: Tuple[str, ...]
    task_owner_field: Tuple[str, ...]
    get_task: Endpoint
    get_image: Endpoint
    delete_task: Endpoint
    claim: Endpoint
    claim_none_free: Tuple[int, ...]
    claim_id_field: Tuple[str, ...]
    total: Endpoint
    total_field: Tuple[str, ...]
    total_auth: bool
    deep: Dict[str, str]
    source: Dict[str, Any]

    # ------------------------------------------------------------------ identity

    def auth(self, credential: Any) -> Dict[str, dict]:
        """Request keyword arguments that carry ``credential``."""
        if self.auth_style == "query":
            return {"params": {self.auth_name: str(credential)}}
        value = f"{self.auth_scheme} {credential}" if self.auth_scheme else str(credential)
        return {"headers": {self.auth_name: value}}

    def credential(self, body: Any, headers: Optional[dict] = None) -> Any:
        return first(body, self.credential_field, headers)

    @property
    def credential_is_public_id(self) -> bool:
        """Whether the credential is the user's own id (anyone who sees the id can use it)."""
        return set(self.credential_field) & set(self.user_id_field) != set()

    # ------------------------------------------------------------------ answers

    def list_page(self, body: Any) -> Tuple[Optional[list], Any]:
        """(items, cursor of the next page or None); items None when the shape is wrong."""
        items = body if self.list_items is None else read_path(body, self.list_items)
        cursor = read_path(body, self.list_next) if self.list_next and isinstance(body, dict) else None
        return (items if isinstance(items, list) else None), cursor

    def describe(self) -> dict:
        """The resolved description, as recorded in a history's meta record."""
        return copy.deepcopy(self.source)


def _endpoint(spec: dict, key: str, section: str) -> Endpoint:
    return Endpoint.parse(spec.get(key), f"{section}.{key}")


TABLES = ("users_table", "tasks_table")


def _deep(section: Any) -> Dict[str, str]:
    """The deep-check settings with the table names put into the queries that name them."""
    if not isinstance(section, dict):
        raise MappingError(f"deep: expected a mapping, got {section!r}")
    deep = dict(section)
    for key in ("file_pattern", "ignore_files", "tasks_sql", "users_sql"):
        if deep.get(key) is not None and not isinstance(deep[key], str):
            raise MappingError(f"deep.{key}: a string, got {deep[key]!r}")
    for key in TABLES:
        if key in deep and not (isinstance(deep[key], str) and deep[key].strip()):
            raise MappingError(f"deep.{key}: a table name (an SQL identifier), got {deep[key]!r}")
    for key in ("tasks_sql", "users_sql"):
        sql = deep.get(key)
        if not sql:
            continue
        for table in TABLES:
            placeholder = "{" + table + "}"
            if placeholder in sql:
                if not deep.get(table):
                    raise MappingError(f"deep.{key} names {placeholder}, but deep.{table} is not set")
                sql = sql.replace(placeholder, deep[table])
        deep[key] = sql
    return deep


SECTIONS = ("auth", "users", "tasks", "claim", "total")


def _text(section: dict, key: str, where: str, default: str) -> str:
    value = section.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise MappingError(f"{where}.{key}: a name, got {value!r}")
    return value


def build(spec: dict) -> Protocol:
    """A ``Protocol`` from a full (already merged) description; every field is checked, and a
    wrong one is a ``MappingError`` that names it."""
    for name in SECTIONS:
        if not isinstance(spec.get(name), dict):
            raise MappingError(f"{name}: expected a mapping (section), got {spec.get(name)!r}")
    auth, users, tasks = spec["auth"], spec["users"], spec["tasks"]
    claim, total = spec["claim"], spec["total"]
    if auth.get("style") not in AUTH_STYLES:
        raise MappingError(f"auth.style must be one of {AUTH_STYLES}, got {auth.get('style')!r}")
    if not isinstance(auth.get("name"), str) or not auth["name"]:
        raise MappingError("auth.name: the query parameter or header that carries identity")
    if not isinstance(auth.get("scheme") or "", str):
        raise MappingError(f"auth.scheme: a word such as Bearer, got {auth['scheme']!r}")
    none_free = claim.get("none_free", [])
    if not isinstance(none_free, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 200 <= s <= 499 for s in none_free):
        raise MappingError(f"claim.none_free: a list of 2xx/4xx statuses, got {none_free!r}")
    for key in ("list_items", "list_next"):
        if tasks.get(key) is not None and not isinstance(tasks[key], str):
            raise MappingError(f"tasks.{key}: a field name or null")
    deep = _deep(spec.get("deep") or {})
    for key in ("file_pattern", "ignore_files"):
        if deep.get(key):
            try:
                re.compile(deep[key])
            except re.error as exc:
                raise MappingError(f"deep.{key}: {exc}") from None
    return Protocol(
        name=_text(spec, "name", "(top level)", "custom"),
        auth_style=auth["style"], auth_name=auth["name"], auth_scheme=auth.get("scheme") or "",
        credential_field=_paths(auth.get("credential"), "auth.credential"),
        create_user=_endpoint(users, "create", "users"), delete_user=_endpoint(users, "delete", "users"),
        email_field=_text(users, "email_field", "users", "email"),
        user_id_field=_paths(users.get("id"), "users.id"),
        list_tasks=_endpoint(tasks, "list", "tasks"), list_items=tasks.get("list_items"),
        list_next=tasks.get("list_next"), list_after_param=_text(tasks, "list_after_param", "tasks", "after"),
        create_task=_endpoint(tasks, "create", "tasks"),
        meta_field=_text(tasks, "meta_field", "tasks", "meta"),
        image_field=_text(tasks, "image_field", "tasks", "image"),
        task_id_field=_paths(tasks.get("id"), "tasks.id"),
        task_meta_field=_paths(tasks.get("meta"), "tasks.meta"),
        task_owner_field=_paths(tasks.get("owner"), "tasks.owner"),
        get_task=_endpoint(tasks, "get", "tasks"), get_image=_endpoint(tasks, "image", "tasks"),
        delete_task=_endpoint(tasks, "delete", "tasks"),
        claim=_endpoint(claim, "endpoint", "claim"), claim_none_free=tuple(none_free),
        claim_id_field=_paths(claim.get("id", ["id"]), "claim.id"),
        total=_endpoint(total, "endpoint", "total"), total_field=_paths(total.get("field"), "total.field"),
        total_auth=bool(total.get("auth", True)),
        deep=deep, source=copy.deepcopy(spec),
    )


MAX_MAPPING_BYTES = 1 << 20  # a mapping is a few hundred bytes; anything near this is not one


def _yaml_loader():
    """PyYAML's safe loader, without aliases: a mapping never needs them, and nested aliases
    (a "billion laughs" document of a few hundred bytes) expand to billions of nodes in
    whatever walks the result (merging, the JSON of the history's meta record)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"aliases (*{event.anchor}) are not accepted in a mapping file",
                    event.start_mark)
            return super().compose_node(parent, index)

    return yaml, NoAliasLoader


def load_mapping(path: Path) -> dict:
    """Read a mapping file (``.json``, or YAML when PyYAML is installed); any problem with it
    (unreadable, too large, not UTF-8, not JSON or YAML, aliases, not an object) is a
    ``MappingError`` naming the file and the reason."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MAPPING_BYTES + 1)
    except OSError as exc:
        raise MappingError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_MAPPING_BYTES:
        raise MappingError(f"{path}: larger than {MAX_MAPPING_BYTES} bytes: not a mapping file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MappingError(f"{path}: not valid JSON: {exc}") from None
    else:
        try:
            yaml, loader = _yaml_loader()
        except ImportError:
            raise MappingError(f"{path}: reading YAML needs PyYAML; give the mapping as .json") from None
        try:
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader without aliases
        except yaml.YAMLError as exc:
            raise MappingError(f"{path}: not valid YAML: {exc}") from None
        except RecursionError:
            raise MappingError(f"{path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise MappingError(f"{path}: the mapping must be an object")
    return data


def resolve(api: str, claim: Optional[str] = None, none_free: Optional[Sequence[int]] = None) -> Protocol:
    """``original``, ``fixed``, ``fixed-take`` or a mapping file; ``claim`` ("POST /path") and
    ``none_free`` (statuses) override the claim endpoint whichever the source."""
    if api in BUILTIN:
        spec = BUILTIN[api]
    else:
        path = Path(api)
        if not path.is_file():
            raise MappingError(f"--api: neither {', '.join(BUILTIN)} nor a mapping file: {api!r}")
        data = load_mapping(path)
        base = data.pop("extends", "original")
        if not isinstance(base, str) or base not in BUILTIN:
            raise MappingError(f"{path}: extends must be one of {', '.join(BUILTIN)}, got {base!r}")
        data.setdefault("name", path.stem)
        spec = _merge(BUILTIN[base], data)
    overrides: Dict[str, Any] = {}
    if claim:
        overrides["endpoint"] = claim
    if none_free is not None:
        overrides["none_free"] = list(none_free)
    if overrides:
        spec = _merge(spec, {"claim": overrides})
    return build(spec)
