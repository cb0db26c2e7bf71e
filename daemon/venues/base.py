"""The venue interface that the market-data and order layers program against.

A venue is two things: a request/response API (reference data, book
snapshots, trade history, orders, account) and market-data streams. The
:class:`Venue` protocol names what later layers need, with the venue-neutral
model types of :mod:`daemon.model`; :class:`daemon.venues.binance.BinanceVenue`
implements it for the Binance Spot protocol (Binance, its spot testnet, and
the bundled simulator).

Error contract (every implementation): failures are raised as
:mod:`daemon.errors` classes, translated once at the venue edge —

* :class:`~daemon.errors.VenueOutcomeUnknownError` (an
  :class:`~daemon.errors.AmbiguousOutcomeError`): an order request may have
  taken effect. Never resend blindly; query by client order id first.
* :class:`~daemon.errors.TransientError` (incl. rate limiting): not processed;
  a bounded retry later may succeed. Queries are already retried inside.
* :class:`~daemon.errors.PermanentError`: refused for good (``code`` and
  ``venue_message`` say why); dead-letter it.
* :class:`~daemon.errors.RetryExhaustedError`: a query's internal retries ran
  out; ``last_error`` is the venue error.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs
import trio

from daemon.model.instruments import ExchangeInfo
from daemon.model.marketdata import DepthSnapshot, Trade
from daemon.model.orders import AccountInfo, FillReport, NewOrder, OrderReport

__all__ = ["MarketStream", "StreamKind", "Subscription", "Venue"]


class StreamKind(enum.Enum):
    """Kinds of market data a venue can stream."""

    TRADES = "trades"  #: every public trade
    DEPTH = "depth"  #: diff-depth updates (to apply on a REST snapshot)


@attrs.frozen
class Subscription:
    """One market-data stream: a kind of data for one symbol."""

    kind: StreamKind
    symbol: str


class MarketStream(Protocol):
    """A self-healing market-data stream that pushes events into a channel.

    ``run`` reports started (``nursery.start``) once the first connection is
    up, then forwards model values (:class:`~daemon.model.marketdata.Trade`,
    :class:`~daemon.model.marketdata.DepthUpdate`) and connection events
    until cancelled, reconnecting by itself. A (re)connection event tells
    the consumer a gap may exist; filling it is the consumer's job.
    """

    async def run(
        self,
        send: trio.MemorySendChannel[object],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Forward events to ``send`` until cancelled; closes ``send`` when done."""
        ...


@runtime_checkable
class Venue(Protocol):
    """What tradingd needs from a trading venue.

    All prices and quantities are ``Decimal``; symbols are the venue's own
    (``"BTCUSDT"``). Every method is a single logical call: implementations
    retry *queries* within a bounded budget and never retry order requests.
    """

    @property
    def name(self) -> str:
        """The venue's name (``"binance"``), used as ``venue`` in model values."""
        ...

    async def exchange_info(self, symbols: Sequence[str] | None = None) -> ExchangeInfo:
        """Symbol rules (filters, status) and the venue's rate limits."""
        ...

    async def depth(self, symbol: str, limit: int = 100) -> DepthSnapshot:
        """A book snapshot with the update id that diff updates continue from."""
        ...

    async def recent_trades(self, symbol: str, limit: int = 500) -> list[Trade]:
        """The latest public trades, oldest first."""
        ...

    async def historical_trades(
        self, symbol: str, from_id: int | None = None, limit: int = 500
    ) -> list[Trade]:
        """Public trades starting at trade id ``from_id`` (gap backfill)."""
        ...

    async def new_order(self, order: NewOrder) -> OrderReport:
        """Place ``order`` under its client order id. Never retried."""
        ...

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        """The venue's view of one order (reconciliation: by client order id)."""
        ...

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        """Cancel one order. Never retried."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """Open orders of one symbol, or of all symbols."""
        ...

    async def my_trades(self, symbol: str, *, from_id: int | None = None) -> list[FillReport]:
        """Our fills on ``symbol`` (from trade id ``from_id``)."""
        ...

    async def account(self) -> AccountInfo:
        """Balances and trading permission."""
        ...

    def market_stream(self, subscriptions: Sequence[Subscription]) -> MarketStream:
        """A stream carrying ``subscriptions`` (not started: call its ``run``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
