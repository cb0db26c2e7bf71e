"""One declaration per admin route: what it takes, what it answers, who may call it.

The admin API registers its routes from :class:`Operation` values and builds
``GET /openapi.json`` from the same values, so the document cannot drift from
the routes. The declaration is also enforced: :func:`query_params` refuses
query parameters an operation does not declare, repeats of a single-valued
one, and values that do not fit (a ``400`` that lists every problem).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs

from daemon.http import HTTPError, Request

__all__ = [
    "ERROR_SCHEMA",
    "Operation",
    "Param",
    "int_param",
    "openapi_document",
    "query_params",
    "text_param",
]

#: Every error of the server: ``{"error": "..."}``, sometimes with more fields.
ERROR_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}

#: Answers any request can get from the server itself, whatever the route.
COMMON_ERRORS: Final[Mapping[int, str]] = {
    400: "Malformed request, query or body; the error lists every problem.",
    408: "The request did not arrive in time.",
    413: "The request body is too large.",
    421: "The Host header does not name this server (DNS rebinding guard).",
    431: "The request head is too large.",
    503: "Busy (connection pressure, handler deadline) or not available; see Retry-After.",
}
#: Answers of routes behind the bearer token.
TOKEN_ERRORS: Final[Mapping[int, str]] = {
    401: "Missing or invalid bearer token.",
    403: "No [admin] token is configured: this route is disabled.",
}

_DIGITS: Final = frozenset(string.digits)


@attrs.frozen
class Param:
    """One query or path parameter: its JSON schema, and how a raw value is checked.

    ``max_chars`` bounds every raw value; an integer parameter takes ASCII
    digits only (``int()`` alone accepts ``'١٢'`` and ``'1_0'``) within
    ``minimum..maximum``.
    """

    name: str
    location: Literal["query", "path"]
    description: str
    kind: Literal["string", "integer"] = "string"
    max_chars: int = 128
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    repeatable: bool = False
    required: bool = False

    def schema(self) -> dict[str, Any]:
        if self.kind == "integer":
            item: dict[str, Any] = {"type": "integer"}
            if self.minimum is not None:
                item["minimum"] = self.minimum
            if self.maximum is not None:
                item["maximum"] = self.maximum
        else:
            item = {"type": "string", "maxLength": self.max_chars}
            if self.pattern is not None:
                item["pattern"] = self.pattern
        return {"type": "array", "items": item} if self.repeatable else item

    def check(self, value: str) -> str | None:
        """The problem with one raw value, or ``None``."""
        if len(value) > self.max_chars:
            return f"{self.name} is longer than {self.max_chars} characters"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            return f"{self.name} contains control characters"
        if self.kind == "integer":
            if not value or not set(value) <= _DIGITS:
                return f"{self.name} must be a decimal integer (ASCII digits), got {value!r}"
            number = int(value)  # at most max_chars ASCII digits: cheap and in limits
            low = self.minimum if self.minimum is not None else 0
            high = self.maximum
            if number < low or (high is not None and number > high):
                bound = f"{low}..{high}" if high is not None else f">= {low}"
                return f"{self.name} must be in {bound}, got {number}"
        return None


def int_param(name: str, description: str, *, minimum: int, maximum: int) -> Param:
    """A single-valued integer query parameter."""
    return Param(
        name,
        "query",
        description,
        kind="integer",
        max_chars=len(str(maximum)) + 2,  # leading zeros are allowed, a little
        minimum=minimum,
        maximum=maximum,
    )


def text_param(
    name: str, description: str, *, max_chars: int = 128, repeatable: bool = False
) -> Param:
    """A string query parameter."""
    return Param(name, "query", description, max_chars=max_chars, repeatable=repeatable)


@attrs.frozen
class Operation:
    """One route: method and path pattern, what it takes, what it answers.

    Attributes:
        responses: the route's own answers (status → description); the
            server's common errors (and the token's, when ``token``) are added.
        body: JSON schema of the request body, if it takes one.
        priority: served from the reserve of connections when the pool is full.
        content_type: media type of the successful answers.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    responses: Mapping[int, str]
    token: bool = False
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None
    body_required: bool = False
    priority: bool = False
    content_type: str = "application/json"
    description: str = ""
    schemas: Mapping[int, Mapping[str, Any]] = attrs.field(factory=dict)

    def query(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "query")


def query_params(request: Request, operation: Operation) -> dict[str, tuple[str, ...]]:
    """The request's query, checked against ``operation``: every problem in one ``400``.

    Raises:
        HTTPError: an unknown parameter, a repeated single-valued one, or a
            value that does not fit its declaration.
    """
    declared = {p.name: p for p in operation.query()}
    problems: list[str] = []
    unknown = sorted(set(request.query) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        shown = ", ".join(repr(u[:64]) for u in unknown[:10])
        problems.append(f"unknown query parameter(s) {shown} (known: {known})")
    for name, param in declared.items():
        values = request.query.get(name, ())
        if len(values) > 1 and not param.repeatable:
            problems.append(f"{name} is given {len(values)} times; give it once")
        for value in values:
            problem = param.check(value)
            if problem is not None:
                problems.append(problem)
                break
        if param.required and not values:
            problems.append(f"{name} is required")
    if problems:
        raise HTTPError(400, "; ".join(problems))
    return {name: request.query.get(name, ()) for name in declared}


def _openapi_path(pattern: str) -> str:
    return pattern  # the router's {name} segments are OpenAPI's already


def _response(description: str, content_type: str | None, schema: Mapping[str, Any]) -> Any:
    answer: dict[str, Any] = {"description": description}
    if content_type is not None:
        answer["content"] = {content_type: {"schema": dict(schema)}}
    return answer


def _parameter(param: Param) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "description": param.description,
        "required": param.required or param.location == "path",
        "schema": param.schema(),
    }
    if param.repeatable:
        doc["style"] = "form"
        doc["explode"] = True
    return doc


def openapi_document(
    operations: Iterable[Operation],
    *,
    title: str,
    version: str,
    description: str = "",
    servers: Sequence[str] = (),
) -> dict[str, Any]:
    """An OpenAPI 3.1 document describing ``operations`` (JSON Schema 2020-12 bodies)."""
    paths: dict[str, dict[str, Any]] = {}
    uses_token = False
    for op in operations:
        responses: dict[str, Any] = {}
        for status, text in sorted(op.responses.items()):
            if status in op.schemas:
                media = op.content_type if 200 <= status < 300 else "application/json"
                responses[str(status)] = _response(text, media, op.schemas[status])
            elif 200 <= status < 300:
                json_body = op.content_type == "application/json"
                schema: Mapping[str, Any] = {"type": "object"} if json_body else {"type": "string"}
                responses[str(status)] = _response(text, op.content_type, schema)
            else:
                responses[str(status)] = _response(text, "application/json", ERROR_SCHEMA)
        extra = {**COMMON_ERRORS, **(TOKEN_ERRORS if op.token else {})}
        for status, text in extra.items():
            responses.setdefault(str(status), _response(text, "application/json", ERROR_SCHEMA))
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "responses": dict(sorted(responses.items())),
        }
        if op.description:
            entry["description"] = op.description
        if op.params:
            entry["parameters"] = [_parameter(p) for p in op.params]
        if op.body is not None:
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": dict(op.body)}},
            }
        if op.token:
            uses_token = True
            entry["security"] = [{"bearer": []}]
        else:
            entry["security"] = []
        if op.priority:
            entry["x-priority"] = True
        paths.setdefault(_openapi_path(op.path), {})[op.method.lower()] = entry
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
    }
    if servers:
        document["servers"] = [{"url": url} for url in servers]
    if uses_token:
        document["components"] = {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of the [admin] token secret.",
                }
            }
        }
    return document
