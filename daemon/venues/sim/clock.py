"""The simulator's wall clock, with a settable offset (``POST /sim/clock``).

A real venue's clock is never exactly the client's: a torture run skews the
simulator's clock to see the client cope (``-1021`` outside ``recvWindow``,
``serverTime`` far from its own). :class:`SkewedClock` wraps the injectable
wall clock (system time, or :func:`~daemon.venues.sim.server.trio_clock_ms`
in virtual-time tests) and adds ``offset_ms`` to every reading, so every
consumer — exchange timestamps, ``timestamp``/``recvWindow`` checks, the
rate-limit windows, ``serverTime`` — moves together. It is a control
setting, like an armed fault: it is not kept in the state file (a restart
sets it again with ``--clock-offset-ms``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from daemon.http import HTTPError, Request, Response, Router

__all__ = ["MAX_OFFSET_MS", "SkewedClock", "check_offset", "clock_routes"]

#: Largest offset either way: one day.
MAX_OFFSET_MS: Final = 86_400_000


def check_offset(value: object) -> int:
    """``value`` as an offset in milliseconds.

    Raises:
        ValueError: not an integer (booleans are not), or beyond ±:data:`MAX_OFFSET_MS`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"offset_ms must be an integer (milliseconds), got {value!r}")
    if not -MAX_OFFSET_MS <= value <= MAX_OFFSET_MS:
        raise ValueError(f"offset_ms must be within ±{MAX_OFFSET_MS} (one day), got {value}")
    return value


class SkewedClock:
    """Milliseconds since the epoch: ``base()`` plus :attr:`offset_ms`."""

    def __init__(self, base: Callable[[], int], offset_ms: int = 0) -> None:
        self.base = base
        self.offset_ms = check_offset(offset_ms)

    def __call__(self) -> int:
        return self.base() + self.offset_ms

    def set_offset(self, offset_ms: object) -> int:
        """Set the offset (checked by :func:`check_offset`); returns it."""
        self.offset_ms = check_offset(offset_ms)
        return self.offset_ms


_BODY: Final = '{"offset_ms": int}'


def clock_routes(router: Router, clock: SkewedClock) -> None:
    """Add ``GET /sim/clock`` and ``POST /sim/clock`` (see :mod:`daemon.venues.sim.control`)."""

    def state() -> dict[str, Any]:
        base = clock.base()
        return {"offset_ms": clock.offset_ms, "now_ms": base + clock.offset_ms, "base_ms": base}

    async def get(request: Request) -> Response:
        return Response.json(state())

    async def post(request: Request) -> Response:
        data = request.json()
        if not isinstance(data, dict):
            raise HTTPError(400, f"expected a JSON object {_BODY}")
        unknown = set(data) - {"offset_ms"}
        if unknown:
            raise HTTPError(400, f"unknown key(s) {sorted(unknown)}; expected {_BODY}")
        if "offset_ms" not in data:
            raise HTTPError(400, f"missing offset_ms; expected {_BODY}")
        try:
            clock.set_offset(data["offset_ms"])
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        return Response.json(state())

    router.add("GET", "/sim/clock", get)
    router.add("POST", "/sim/clock", post)
