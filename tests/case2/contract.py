"""The fixed service's OpenAPI document as a checker of real responses.

``Contract(document).check(method, path, status, content_type, body)`` finds the documented
operation of a request and fails when the status is not one the operation documents, or when a
JSON body does not match the documented schema (every error must be the ``Error`` object).
Requests to no documented operation may only be refused: 401 (authentication comes before
routing), 404 or 405, with an ``Error`` body. The test client of the fixed service runs every
response it gets through this, so every status any test observes is checked against the
document; ``observed`` keeps (operationId, status) pairs for the coverage test.

jsonschema is imported lazily so that the as-given evidence also collects on the 2020 stack.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

UNROUTED = frozenset({401, 404, 405})
_BASE = "urn:task-service:openapi"


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


@dataclass
class Contract:
    document: dict
    observed: set = field(default_factory=set)

    def __post_init__(self):
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self._registry = Registry().with_resource(
            _BASE, Resource.from_contents(self.document, default_specification=DRAFT202012))
        self._validator = Draft202012Validator
        # Literal paths first, so that /tasks/claim is not taken for /tasks/{task_id}; every
        # path parameter of this API is an id (digits).
        self._paths = sorted(((re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[0-9]+", re.escape(t))
                                          + "$"), t) for t in self.document["paths"]),
                             key=lambda p: "{" in p[1])

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        """(pointer, operation) of the documented operation serving ``method path``; None when
        the path or the method is not documented."""
        for regex, template in self._paths:
            if regex.match(path):
                op = self.document["paths"][template].get(method.lower())
                return (f"/paths/{_escape(template)}/{method.lower()}", op) if op else None
        return None

    def _follow(self, pointer: str) -> tuple[str, dict]:
        node = self.document
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if "$ref" in node:
            return self._follow(node["$ref"][1:])
        return pointer, node

    def schema_errors(self, pointer: str, instance) -> list[str]:
        validator = self._validator({"$ref": f"{_BASE}#{pointer}"}, registry=self._registry)
        return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(instance)]

    def check(self, method: str, path: str, status: int, content_type: str | None,
              body: bytes) -> None:
        """Raise AssertionError when the response breaks the document."""
        path = path.split("?", 1)[0]
        found = self.operation(method, path)
        if found is None:
            assert status in UNROUTED, f"{method} {path}: no such operation, yet {status}"
            self.observed.add(("unrouted", status))
            pointer, response = "/components/responses/404", None
        else:
            op_pointer, op = found
            assert str(status) in op["responses"], (
                f"{method} {path} ({op['operationId']}): status {status} is not documented "
                f"(documented: {sorted(op['responses'])})")
            self.observed.add((op["operationId"], status))
            pointer, response = self._follow(f"{op_pointer}/responses/{status}")
        content = (response or self._follow(pointer)[1]).get("content")
        media = (content_type or "").split(";", 1)[0].strip()
        if not content:
            assert not body, f"{method} {path} {status}: documented without a body, got {body[:80]!r}"
            return
        assert media in content, f"{method} {path} {status}: {media!r} is not documented"
        if media == "application/json":
            problems = self.schema_errors(f"{pointer}/content/{_escape(media)}/schema",
                                          json.loads(body))
            assert not problems, f"{method} {path} {status}: the body breaks the schema: {problems}"
