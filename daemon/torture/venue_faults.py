"""The venue's faults of a torture scenario: armed in the simulator, or made by a neighbour.

Each function applies one fault kind of :data:`~daemon.torture.setup.FAULT_KINDS`
to the running simulator and notes what it did in ``detail``. Armed faults
carry a ``duration_s`` (they disarm themselves), so they overlap the next
faults of the schedule; clock skew is held, then undone.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from daemon.torture.procs import SimProc
from daemon.torture.setup import QUERY_LAG_S, RECV_WINDOW_MS, SYMBOL

__all__ = ["ORDER_PATH", "STALL_S", "VENUE_FAULTS"]

ORDER_PATH: Final = {"method": "POST", "path": "/api/v3/order"}
#: Stalls longer than the daemon's send_timeout_s (1 s).
STALL_S: Final = 1.5
ORDER_FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "rest_error", "phase": "before", "status": 503},
    {"kind": "rest_error", "phase": "after", "status": 503},
    {
        "kind": "rest_error",
        "phase": "after",
        "status": 500,
        "code": -1006,
        "msg": "An unexpected response was received from the message bus.",
    },
    {"kind": "rest_timeout", "phase": "before", "delay_s": STALL_S},
    {"kind": "rest_timeout", "phase": "after", "delay_s": STALL_S},
    {"kind": "rest_unknown"},
)
QUERY_PATHS = ("/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades")
MALFORMED = ("truncated", "deep", "huge_int", "big_int", "huge_exponent", "nested", "binary", "nan")


async def rest_order_faults(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    specs = rng.sample(ORDER_FAULTS, rng.randint(1, 3))
    duration = rng.uniform(2.0, 6.0)
    prob = round(rng.uniform(0.2, 0.6), 3)
    for spec in specs:
        await sim.arm(spec | ORDER_PATH | {"probability": prob, "duration_s": duration})
    detail["armed"] = [s["kind"] + "/" + str(s.get("phase", "")) for s in specs]
    detail["duration_s"] = round(duration, 3)


async def rest_query_faults(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    duration = rng.uniform(2.0, 6.0)
    for path in QUERY_PATHS:
        await sim.arm(
            {
                "kind": "rest_error",
                "phase": "before",
                "status": rng.choice((500, 502, 503)),
                "method": "GET",
                "path": path,
                "probability": 0.5,
                "duration_s": duration,
            }
        )
    detail["duration_s"] = round(duration, 3)


async def rate_limit_429(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    count = rng.randint(1, 4)
    await sim.arm({"kind": "rate_limit_burst", "retry_after_s": 1, "count": count})
    detail["count"] = count


async def ip_ban_418(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    """Another process on the host burns the IP's weight and insists until it is banned."""
    statuses: dict[int, int] = {}
    for _ in range(400):
        try:
            with trio.fail_after(5.0):
                response = await sim.http.get(f"/api/v3/depth?symbol={SYMBOL}&limit=5000")
            status = response.status_code
        except Exception:  # the venue is down: the neighbour gives up
            status = 0
        statuses[status] = statuses.get(status, 0) + 1
        if status in (0, 418):
            break
    detail["neighbour_statuses"] = {str(k): v for k, v in sorted(statuses.items())}


async def stream_drop(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    spec = {
        "kind": "ws_drop",
        "every_s": round(rng.uniform(1.0, 3.0), 3),
        "mode": rng.choice(("abort", "close")),
        "duration_s": round(rng.uniform(3.0, 8.0), 3),
    }
    await sim.arm(spec)
    detail.update(spec)


async def stream_stall(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    spec = {"kind": "ws_stall", "duration_s": round(rng.uniform(1.0, 4.0), 3)}
    await sim.arm(spec)
    detail.update(spec)


async def stream_malformed(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    spec = {
        "kind": "ws_malformed",
        "variant": rng.choice(MALFORMED),
        "probability": 0.3,
        "count": rng.randint(1, 3),
        "replace": rng.random() < 0.5,
    }
    await sim.arm(spec)
    detail.update(spec)


async def userstream_faults(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    if rng.random() < 0.5:
        spec: dict[str, Any] = {"kind": "userstream_terminate", "count": 1}
    else:
        spec = {"kind": "userstream_stall", "duration_s": round(rng.uniform(0.5, 2.5), 3)}
    await sim.arm(spec)
    detail.update(spec)


async def visibility_lag(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    spec = {
        "kind": "order_invisible",
        "delay_s": round(rng.uniform(0.2, 0.9) * QUERY_LAG_S, 3),
        "probability": 0.8,
        "duration_s": round(rng.uniform(3.0, 8.0), 3),
    }
    await sim.arm(spec)
    detail.update(spec)


async def _skew(sim: SimProc, offset_ms: int, hold_s: float, detail: dict[str, Any]) -> None:
    detail["offset_ms"] = offset_ms
    detail["hold_s"] = round(hold_s, 3)
    await sim.control("POST", "/sim/clock", {"offset_ms": offset_ms})
    try:
        await trio.sleep(hold_s)
    finally:
        with trio.CancelScope(shield=True):
            await sim.control("POST", "/sim/clock", {"offset_ms": 0})


async def clock_skew_within(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    offset = int(rng.choice((-1, 1)) * rng.uniform(0.2, 0.6) * RECV_WINDOW_MS)
    await _skew(sim, offset, rng.uniform(2.0, 6.0), detail)


async def clock_skew_beyond(sim: SimProc, rng: random.Random, detail: dict[str, Any]) -> None:
    offset = int(rng.choice((-1, 1)) * rng.uniform(2.0, 10.0) * RECV_WINDOW_MS)
    await _skew(sim, offset, rng.uniform(2.0, 6.0), detail)


Handler = Callable[[SimProc, random.Random, dict[str, Any]], Awaitable[None]]

#: The venue's fault kinds and their functions.
VENUE_FAULTS: Final[dict[str, Handler]] = {
    "rest-order-faults": rest_order_faults,
    "rest-query-faults": rest_query_faults,
    "rate-limit-429": rate_limit_429,
    "ip-ban-418": ip_ban_418,
    "stream-drop": stream_drop,
    "stream-stall": stream_stall,
    "stream-malformed": stream_malformed,
    "userstream-faults": userstream_faults,
    "visibility-lag": visibility_lag,
    "clock-skew-within": clock_skew_within,
    "clock-skew-beyond": clock_skew_beyond,
}
