"""Running blocking code: one way, with an owner and a bound.

Blocking calls (SQLite, file fsync, a C library without async support) must
not run on the event loop — they would stall every task and trip the loop-lag
watchdog. The one sanctioned way is a :class:`ThreadLane`: a named owner plus
a :class:`trio.CapacityLimiter` that bounds how many of that owner's calls run
at once (``max_threads=1`` gives the "one connection, one thread" discipline
of the store, docs/ARCHITECTURE.md §6). Worker threads are named ``tradingd:<owner>`` so
``py-spy dump`` and thread-aware logs show whose call is stuck.

Calling back into Trio from inside the worker thread needs no helper: a
thread started by ``trio.to_thread`` already knows its Trio run, so use
``trio.from_thread.run(async_fn, *args)`` to await something on the loop,
``trio.from_thread.run_sync(fn, *args)`` for a quick synchronous call there
(e.g. ``send_channel.send_nowait``), and ``trio.from_thread.check_cancelled()``
in long loops to notice that the caller was cancelled.

Cancellation: a thread cannot be interrupted. By default the caller waits for
the call to finish even when cancelled (``abandon_on_cancel=False``), so the
owner never has two calls racing on the same resource; give blocking calls
their own timeouts (``sqlite3.connect(timeout=...)``, socket timeouts).
``abandon_on_cancel=True`` returns at once and lets the thread finish alone
— only for calls whose result nobody needs and that touch no shared state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple, Unpack

import attrs
import trio

__all__ = ["LaneStats", "ThreadLane", "run_in_thread"]

log = logging.getLogger("tradingd.resilience.threads")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

THREAD_NAME_PREFIX = "tradingd:"


async def run_in_thread(
    fn: Callable[[Unpack[Ts]], T],
    *args: *Ts,
    owner: str,
    limiter: trio.CapacityLimiter,
    abandon_on_cancel: bool = False,
) -> T:
    """Run ``fn(*args)`` in a worker thread named after ``owner``, under ``limiter``.

    Prefer a :class:`ThreadLane`, which keeps the owner, the limiter and the
    statistics together; this is the primitive it uses.
    """
    return await trio.to_thread.run_sync(
        fn,
        *args,
        thread_name=f"{THREAD_NAME_PREFIX}{owner}",
        limiter=limiter,
        abandon_on_cancel=abandon_on_cancel,
    )


@attrs.define
class LaneStats:
    """Counters of one lane; ``snapshot()`` is JSON-able.

    ``in_flight`` counts calls queued for or running in a thread; ``total_s``
    is their summed duration including the wait for a free thread.
    """

    calls: int = 0
    errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    total_s: float = 0.0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the counters."""
        return attrs.asdict(self)


class ThreadLane:
    """A named, bounded lane of worker threads for one owner's blocking calls.

    Example::

        store_lane = ThreadLane("store", max_threads=1)
        rows = await store_lane.run(conn.execute, "SELECT 1")

    Args:
        owner: Who makes these calls; names the threads and log lines.
        max_threads: Calls of this lane that may run at once.
    """

    def __init__(self, owner: str, *, max_threads: int = 1) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.owner = owner
        self.limiter = trio.CapacityLimiter(max_threads)
        self.stats = LaneStats()

    async def run(
        self, fn: Callable[[Unpack[Ts]], T], *args: *Ts, abandon_on_cancel: bool = False
    ) -> T:
        """Run ``fn(*args)`` in one of this lane's threads and return its result.

        Exceptions raised by ``fn`` propagate unchanged.
        """
        stats = self.stats
        stats.calls += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        started_at = trio.current_time()
        try:
            return await run_in_thread(
                fn,
                *args,
                owner=self.owner,
                limiter=self.limiter,
                abandon_on_cancel=abandon_on_cancel,
            )
        except Exception:
            stats.errors += 1
            raise
        finally:
            stats.in_flight -= 1
            stats.total_s += trio.current_time() - started_at

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state and counters."""
        limiter = self.limiter.statistics()
        return {
            "owner": self.owner,
            "max_threads": self.limiter.total_tokens,
            "running": limiter.borrowed_tokens,
            "waiting": limiter.tasks_waiting,
            "stats": self.stats.snapshot(),
        }
