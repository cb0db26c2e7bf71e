"""Test doubles for strategy tests: an in-memory order gateway and a settable price source.

:class:`RecordingGateway` implements :class:`~daemon.orders.gateway.OrderGateway`
over a dict. It validates requests with the real
:meth:`~daemon.orders.intent.OrderIntent.from_request` (so a strategy that
builds a malformed request fails here as it would in the daemon), derives the
real client order id, answers a repeated ``message_id`` with the same intent,
and keeps a cancelled order open (with ``cancel_requested_at_ms`` set) until
:meth:`RecordingGateway.confirm_cancels`, as the real pipeline does until the
venue confirms. Refusals to inject are queued in ``refusals``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import trio
from trio_util import AsyncValue

from daemon.marketdata.book import BookView
from daemon.model.instruments import SymbolFilters, SymbolInfo
from daemon.orders.gateway import SubmitResult, UnknownOrderError
from daemon.orders.intent import OrderIntent
from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState
from daemon.strategies.base import BookPredicate
from tests.helpers.instruments import trading_symbol

VENUE = "sim"
D = Decimal


class RecordingGateway:
    """In-memory :class:`~daemon.orders.gateway.OrderGateway` (see the module docstring)."""

    def __init__(self) -> None:
        self.records: dict[str, IntentRecord] = {}
        #: Every request seen, with the Trio time it arrived (refused ones too).
        self.requests: list[tuple[float, dict[str, Any]]] = []
        #: Client order ids whose cancel was requested, in order.
        self.cancels: list[str] = []
        #: Raised by the next submit calls, first in first out.
        self.refusals: collections.deque[Exception] = collections.deque()
        #: While set, open_orders raises it.
        self.open_orders_error: Exception | None = None
        self._seq = 0

    async def submit(self, request: Mapping[str, Any]) -> SubmitResult:
        await trio.lowlevel.checkpoint()
        self.requests.append((trio.current_time(), dict(request)))
        if self.refusals:
            raise self.refusals.popleft()
        intent = OrderIntent.from_request(request)
        existing = self.records.get(intent.client_order_id)
        if existing is not None:
            return SubmitResult(existing, created=False)
        self._seq += 1
        now_ms = int(trio.current_time() * 1000)
        record = attrs.evolve(
            IntentRecord.from_intent(intent, venue=VENUE, seq=self._seq, now_ms=now_ms),
            state=OrderState.ACCEPTED,
        )
        self.records[record.client_order_id] = record
        return SubmitResult(record, created=True)

    async def cancel(self, client_order_id: str) -> IntentRecord:
        await trio.lowlevel.checkpoint()
        record = await self.get(client_order_id)
        if record.is_terminal:
            return record
        if record.cancel_requested_at_ms is None:
            record = attrs.evolve(record, cancel_requested_at_ms=int(trio.current_time() * 1000))
            self.records[client_order_id] = record
        self.cancels.append(client_order_id)
        return record

    async def get(self, client_order_id: str) -> IntentRecord:
        await trio.lowlevel.checkpoint()
        try:
            return self.records[client_order_id]
        except KeyError:
            raise UnknownOrderError(client_order_id) from None

    async def open_orders(self, account: str | None = None) -> list[IntentRecord]:
        await trio.lowlevel.checkpoint()
        if self.open_orders_error is not None:
            raise self.open_orders_error
        return sorted(
            (
                r
                for r in self.records.values()
                if not r.is_terminal and (account is None or r.account == account)
            ),
            key=lambda r: r.seq,
        )

    def confirm_cancels(self) -> None:
        """The venue confirmed every requested cancel: those orders are CANCELED."""
        for cid, record in list(self.records.items()):
            if record.cancel_requested_at_ms is not None and not record.is_terminal:
                self.records[cid] = attrs.evolve(record, state=OrderState.CANCELED)

    def add_foreign(self, message_id: str, *, account: str, symbol: str) -> IntentRecord:
        """An open order someone else placed (not the strategy under test)."""
        intent = OrderIntent.from_request(
            {
                "message_id": message_id,
                "account": account,
                "symbol": symbol,
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "1",
                "price": "1",
                "time_in_force": "GTC",
            }
        )
        self._seq += 1
        record = attrs.evolve(
            IntentRecord.from_intent(intent, venue=VENUE, seq=self._seq),
            state=OrderState.ACCEPTED,
        )
        self.records[record.client_order_id] = record
        return record

    def placed(self) -> list[IntentRecord]:
        """Every intent created, in submission order."""
        return sorted(self.records.values(), key=lambda r: r.seq)


def book_view(
    symbol: str, bid: str, ask: str, *, in_sync: bool = True, venue: str = VENUE
) -> BookView:
    """A one-level book."""
    return BookView(
        venue=venue,
        symbol=symbol,
        in_sync=in_sync,
        last_update_id=1,
        bids=((D(bid), D("1")),),
        asks=((D(ask), D("1")),),
    )


class StaticPrices:
    """A :class:`~daemon.strategies.base.PriceSource` whose views the test sets."""

    def __init__(self, *views: BookView) -> None:
        self.values: dict[str, Any] = {view.symbol: AsyncValue(view) for view in views}

    def set(self, view: BookView) -> None:
        self.values[view.symbol].value = view

    def book(self, symbol: str) -> BookView | None:
        value = self.values.get(symbol)
        return None if value is None else value.value

    async def wait_book(self, symbol: str, predicate: BookPredicate) -> BookView:
        view: BookView = await self.values[symbol].wait_value(predicate)
        return view


def symbol_info(
    symbol: str = "BTCUSDT", *, tick: str = "0.01", step: str = "0.001", min_qty: str = "0.001"
) -> SymbolInfo:
    """A trading symbol with a tick size and a lot step."""
    return trading_symbol(
        SymbolFilters(tick_size=D(tick), step_size=D(step), min_qty=D(min_qty)), symbol=symbol
    )


__all__ = [
    "RecordingGateway",
    "StaticPrices",
    "book_view",
    "symbol_info",
]
