"""The ``Host`` check of :func:`daemon.http.serve_http` (``host_names``), against DNS rebinding."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.http.messages import HTTPError, Request

__all__ = ["HostCheck"]


class HostCheck:
    """Checks that a request names this server: the ``Host`` header and an absolute-form target.

    A page in a browser can make a loopback server answer it by resolving its
    own name to ``127.0.0.1`` (DNS rebinding); the browser still sends that
    name as ``Host``. Accepted: one of ``names`` (case-insensitive, IPv6 in
    brackets), with ``port`` or without a port. HTTP/1.0 requests may omit
    ``Host``; HTTP/1.1 ones cannot (h11 answers ``400``).
    """

    def __init__(self, names: Iterable[str], port: int) -> None:
        self.names = frozenset(_normal_host(n) for n in names if n)
        self.port = port

    def accepts(self, value: str) -> bool:
        """Whether a ``Host`` value (``name``, ``name:port``, ``[v6]:port``) names this server."""
        value = value.strip().lower()
        if value.startswith("["):
            name, bracket, rest = value[1:].partition("]")
            if not bracket:
                return False
        else:
            name = value.partition(":")[0]
            rest = value[len(name) :]
        if rest:
            if not rest.startswith(":"):
                return False
            digits = rest[1:]
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 5):
                return False
            if int(digits) != self.port:
                return False
        return name in self.names

    def __call__(self, request: Request, http_version: bytes) -> None:
        """Raise ``HTTPError(421)`` unless ``request`` names this server."""
        values = []
        host = request.headers.get("host")
        if host is not None:
            values.append(host)
        elif http_version != b"1.0":
            raise HTTPError(400, "missing Host header")
        if request.absolute_authority is not None:
            values.append(request.absolute_authority)
        for value in values:
            if not self.accepts(value):
                expected = ", ".join(
                    sorted(
                        f"[{n}]:{self.port}" if ":" in n else f"{n}:{self.port}" for n in self.names
                    )
                )
                shown = value if len(value) <= 100 else value[:99] + "…"
                raise HTTPError(
                    421, f"Host {shown!r} does not name this server (expected one of: {expected})"
                )


def _normal_host(name: str) -> str:
    name = name.strip().lower()
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name
