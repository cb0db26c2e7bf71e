"""Dispatch on method and path: :class:`Router`, itself a :data:`~daemon.http.Handler`."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

import attrs

from daemon.http.messages import Handler, HTTPError, Request, Response

__all__ = ["Router"]

_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHOD_RE = re.compile(r"[A-Z]+")


@attrs.frozen
class _Route:
    method: str
    pattern: str
    # One entry per path segment: a literal (str) or a parameter name (marked by the tuple).
    segments: tuple[str | tuple[str], ...]
    handler: Handler

    @property
    def literal_count(self) -> int:
        return sum(1 for s in self.segments if isinstance(s, str))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, segments, strict=True):
            if isinstance(want, str):
                if want != got:
                    return None
            elif got:
                params[want[0]] = got
            else:
                return None
        return params


def _compile_pattern(pattern: str) -> tuple[str | tuple[str], ...]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    segments: list[str | tuple[str]] = []
    seen: set[str] = set()
    for raw in pattern[1:].split("/"):
        m = _PARAM_RE.fullmatch(raw)
        if m:
            name = m.group(1)
            if name in seen:
                raise ValueError(f"route pattern {pattern!r} repeats parameter {name!r}")
            seen.add(name)
            segments.append((name,))
        elif "{" in raw or "}" in raw:
            raise ValueError(
                f"route pattern {pattern!r}: a parameter must be a whole segment, "
                f"like '{{name}}', got {raw!r}"
            )
        else:
            segments.append(raw)
    return tuple(segments)


def _split_path(path: str) -> list[str]:
    """Split a percent-encoded path into decoded segments (``/a%2Fb/c`` → ``["a/b", "c"]``)."""
    try:
        return [urllib.parse.unquote(s, errors="strict") for s in path[1:].split("/")]
    except UnicodeDecodeError:
        raise HTTPError(400, "path is not valid percent-encoded UTF-8") from None


class Router:
    """Dispatches requests on method and path; itself a :data:`Handler`.

    Patterns are literal segments and whole-segment parameters:
    ``/orders/{client_order_id}``. A parameter matches one non-empty segment,
    percent-decoded. When several patterns match, the one with the most literal
    segments wins (``/orders/open`` beats ``/orders/{id}``), then the first
    added. Unknown path: ``404``. Known path, other method: ``405`` with
    ``Allow``. ``HEAD`` is served by the ``GET`` route (the server drops the body).
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` requests to paths matching ``pattern``.

        Raises:
            ValueError: bad method or pattern, or the same method and pattern twice.
        """
        method = method.upper()
        if not _METHOD_RE.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        segments = _compile_pattern(pattern)
        for route in self._routes:
            if route.method == method and route.segments == segments:
                raise ValueError(f"duplicate route {method} {pattern} (already {route.pattern})")
        self._routes.append(_Route(method, pattern, segments, handler))

    def routes(self) -> list[tuple[str, str]]:
        """Every registered ``(method, pattern)``, in the order added."""
        return [(r.method, r.pattern) for r in self._routes]

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`; returns the handler unchanged."""

        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler

        return register

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """Find the handler and path parameters for ``method`` and ``path``.

        Raises:
            HTTPError: ``404``, ``405`` (with ``Allow``) or ``400`` (bad encoding).
        """
        if not path.startswith("/"):
            raise HTTPError(404, "not found")
        segments = _split_path(path)
        matches = [(r, p) for r in self._routes if (p := r.match(segments)) is not None]
        if not matches:
            raise HTTPError(404, "not found")
        wanted = {method, "GET"} if method == "HEAD" else {method}
        for want in (method, *(wanted - {method})):  # an explicit HEAD route first
            candidates = [(r, p) for r, p in matches if r.method == want]
            if candidates:
                best = max(candidates, key=lambda rp: rp[0].literal_count)  # first on ties
                return best[0].handler, best[1]
        allowed = {r.method for r, _ in matches}
        if "GET" in allowed:
            allowed.add("HEAD")
        raise HTTPError(405, "method not allowed", headers=(("Allow", ", ".join(sorted(allowed))),))

    async def dispatch(self, request: Request) -> Response:
        """Call the matching handler with ``path_params`` filled in.

        Raises:
            HTTPError: no route (``404``), wrong method (``405``), or from the handler.
        """
        handler, params = self.resolve(request.method, request.path)
        return await handler(attrs.evolve(request, path_params=params))

    async def __call__(self, request: Request) -> Response:
        return await self.dispatch(request)
