"""What market-data capture needs from its neighbours, as protocols; and small helpers.

Capture programs against these rather than the concrete classes so the lead
can wire the real ones (:class:`~daemon.venues.link.VenueLink`,
:class:`~daemon.venues.binance.BinanceVenue`,
:class:`~daemon.store.SqliteStore`) and tests can wrap them (a store that
sleeps, a store that fails N times, a scripted venue). The market-data
tables themselves are the store's facade (:data:`MarketStore`), whose
signatures are declared once, in :mod:`daemon.store.marketdata`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import trio

from daemon.model.marketdata import DepthSnapshot, Trade
from daemon.resilience import Jitter, RetryPolicy
from daemon.store.marketdata import MarketDataStore
from daemon.supervise import ChildContext
from daemon.venues.base import Subscription

__all__ = [
    "Backoff",
    "MarketStore",
    "MarketStreamLike",
    "StoreLike",
    "VenueClient",
    "VenueLinkLike",
    "sleep_with_heartbeat",
]


class MarketStreamLike(Protocol):
    """A self-healing market stream (:class:`~daemon.venues.binance.BinanceStream`)."""

    async def run(
        self,
        send: trio.MemorySendChannel[Any],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...


class VenueClient(Protocol):
    """The venue client calls capture makes (:class:`~daemon.venues.binance.BinanceVenue`)."""

    @property
    def name(self) -> str: ...

    @property
    def time_offset_ms(self) -> int | None: ...

    def market_stream(self, subscriptions: Sequence[Subscription]) -> MarketStreamLike: ...

    async def depth(self, symbol: str, limit: int = ...) -> DepthSnapshot: ...

    async def recent_trades(self, symbol: str, limit: int = ...) -> list[Trade]: ...

    async def historical_trades(
        self, symbol: str, from_id: int | None = ..., limit: int = ...
    ) -> list[Trade]: ...


class VenueLinkLike(Protocol):
    """Hands out the venue client once the venue answered.

    Implemented by :class:`~daemon.venues.link.VenueLink`.
    """

    async def wait_up(self) -> VenueClient: ...


#: The market-data tables capture writes to: the store's own facade
#: (:class:`~daemon.store.marketdata.MarketDataStore`, ``store.market``), named
#: here rather than restated as a protocol, so its signatures have one home.
#: Tests wrap it by duck typing (a store that sleeps, one that fails N times).
MarketStore: TypeAlias = MarketDataStore


class StoreLike(Protocol):
    """The store owner (:class:`~daemon.store.SqliteStore`): capture uses ``.market``."""

    @property
    def market(self) -> MarketStore: ...


class Backoff:
    """Bounded, jittered delays for retrying a condition that is expected to clear.

    The attempts are *not* bounded (a full disk or a venue outage must not
    make capture drop data); the delays are: ``initial_s`` doubling up to
    ``max_s``, with equal jitter (half fixed, half random) so several
    retriers do not synchronise.
    """

    def __init__(self, name: str, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._policy = RetryPolicy(
            name=name,
            base_delay_s=initial_s,
            max_delay_s=max_s,
            jitter=Jitter.EQUAL,
            rng=rng,
        )

    def delay_s(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures (>= 1)."""
        return self._policy.next_delay_s(failures)


async def sleep_with_heartbeat(ctx: ChildContext, seconds: float, interval_s: float) -> None:
    """Sleep ``seconds``, heartbeating at least every ``interval_s`` meanwhile.

    A task waiting out a backoff is alive, not hung; its heartbeat must say so.
    """
    deadline = trio.current_time() + seconds
    step = max(interval_s / 2, 1e-3)
    while True:
        ctx.heartbeat()
        now = trio.current_time()
        if now >= deadline:
            return
        await trio.sleep_until(min(deadline, now + step))
