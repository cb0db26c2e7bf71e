"""An in-memory venue with the Binance order semantics that matter, and faults on demand.

:class:`ModelVenue` implements :class:`~daemon.orders.ledger.OrderVenue` (the
five calls the order pipeline makes) over plain Python state, so a test can
drive the real pipeline under a virtual clock and then compare what the
pipeline recorded with what the venue *really* did.

What it models, because exactly-once effects depend on it:

* orders are keyed by client order id, and a new order whose client id belongs
  to an **open** order is ``-2010 Duplicate order sent.``
  (:class:`~daemon.errors.DuplicateOrderError`);
* a client id reused after its first order **closed** is accepted again as a
  *second* order — the danger a blind resend runs into. :attr:`ModelVenue.audit`
  records every order ever created, so a test can prove it never happened;
* MARKET orders fill at once (two trades with unique trade ids), LIMIT orders
  rest until the test fills or cancels them (:meth:`ModelVenue.fill`,
  :meth:`ModelVenue.cancel_outside`);
* a query of an unknown (or not yet visible) order is ``-2013``
  (:class:`~daemon.errors.OrderNotFoundError`), a cancel of one ``-2011``;
* a request is refused with ``-1021`` when it is processed later than
  ``recv_window_ms`` after it was sent (the venue's defence against stale
  requests, which the pipeline's visibility grace relies on);
* every order change (new, each trade, cancel, expiry) is pushed on the
  venue's user data stream (:attr:`ModelVenue.stream`, a
  :class:`~tests.helpers.model_userstream.StreamHub`) the moment it happens —
  also while the order is not yet visible to queries (``LAG``): the stream
  then knows what the queries cannot see. :meth:`ModelVenue.user_stream` is a
  session of it for one process, with its own faults (drop, terminate, stall,
  refused subscriptions; see that module).

Faults are armed per call kind (:meth:`ModelVenue.arm`) and consumed by the
next calls of that kind, in order; the test (hypothesis) decides which. See
:class:`FaultKind` for what each one does to each call. Errors are the real
:mod:`daemon.errors` classes with the fields the Binance client would set
(``code``, ``venue_message``, ``http_status``, ``endpoint``).

The venue outlives the processes that talk to it: a request in flight keeps
going after its caller gave up or died (:attr:`FaultKind.SLOW`), which is why
:meth:`ModelVenue.serve` must run in a nursery of its own.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, deque
from collections.abc import Callable
from decimal import Decimal
from typing import Final, NoReturn, TypeVar

import attrs
import trio

from daemon.errors import (
    CancelRejectedError,
    DuplicateOrderError,
    OrderNotFoundError,
    OrderRejectedError,
    TimestampOutOfWindowError,
    VenueErrorFields,
    VenueOutcomeUnknownError,
    VenueUnavailableError,
)
from daemon.model.orders import (
    FillReport,
    NewOrder,
    OrderFill,
    OrderReport,
    OrderType,
    Side,
    TimeInForce,
    VenueOrderStatus,
)
from daemon.model.userstream import ExecutionReport, ExecutionType, UserStreamEvent
from tests.helpers.model_userstream import ModelUserStream, StreamHub

__all__ = [
    "EPOCH_MS",
    "AuditEntry",
    "Call",
    "Fault",
    "FaultKind",
    "ModelVenue",
    "ProcessKilledError",
    "VenueOrder",
    "VenueTrade",
]

T = TypeVar("T")

#: Wall-clock milliseconds at virtual time 0 (the pipeline's wall clock must agree).
EPOCH_MS: Final = 1_700_000_000_000
#: Where MARKET orders fill.
MARKET_PRICE: Final = Decimal("30000.00")
#: The venue's answers carry quantities at this precision (Binance prints 8 decimals).
_QTY_STEP: Final = Decimal("0.00000001")

_ENDPOINTS: Final = {
    "new_order": "POST /api/v3/order",
    "get_order": "GET /api/v3/order",
    "cancel_order": "DELETE /api/v3/order",
    "open_orders": "GET /api/v3/openOrders",
    "my_trades": "GET /api/v3/myTrades",
}


class ProcessKilledError(BaseException):
    """The calling process died (``kill -9``) at this point.

    A :class:`BaseException`, so no ``except Exception`` in the pipeline can
    swallow it: it unwinds everything, as the death of the process would.
    """


class Call(enum.Enum):
    """The venue calls faults can be armed for."""

    NEW_ORDER = "new_order"
    GET_ORDER = "get_order"
    CANCEL_ORDER = "cancel_order"
    OPEN_ORDERS = "open_orders"
    MY_TRADES = "my_trades"

    @property
    def mutating(self) -> bool:
        """Whether the call changes venue state (its 5xx means "may have taken effect")."""
        return self in (Call.NEW_ORDER, Call.CANCEL_ORDER)


class FaultKind(enum.Enum):
    """What goes wrong with one call.

    ========================  =============================================================
    kind                      effect
    ========================  =============================================================
    ``REJECT``                new order: ``-2010`` reject, not processed; cancel: ``-2011``,
                              not processed
    ``ERROR_BEFORE``          HTTP 503 before processing: order calls raise
                              :class:`VenueOutcomeUnknownError` (the client cannot know),
                              queries :class:`VenueUnavailableError`
    ``ERROR_AFTER``           order calls: processed, then HTTP 503
                              (:class:`VenueOutcomeUnknownError`)
    ``HANG_AFTER``            order calls: processed, then no answer until the caller gives up
    ``UNAVAILABLE``           connect error, never sent: :class:`VenueUnavailableError`
    ``SLOW``                  new order: processed ``delay_s`` after it was sent, even if the
                              caller gave up or died meanwhile (``-1021`` past the
                              ``recvWindow``); other calls: the answer (the state when the
                              call arrived) comes ``delay_s`` late
    ``LAG``                   new order: processed at once, invisible to queries, open-order
                              lists and cancels for ``delay_s``
    ``LAG_UNANSWERED``        new order: as ``LAG``, then HTTP 503
                              (:class:`VenueOutcomeUnknownError`): an ambiguous send that
                              queries cannot resolve for ``delay_s`` (a venue lagging
                              beyond any honest ``query_lag_s``; only the stream sees it)
    ``KILL_BEFORE``           the caller's process dies as the request leaves (not processed)
    ``KILL_AFTER``            processed, then the caller's process dies before the answer
    ========================  =============================================================
    """

    REJECT = "reject"
    ERROR_BEFORE = "error_before"
    ERROR_AFTER = "error_after"
    HANG_AFTER = "hang_after"
    UNAVAILABLE = "unavailable"
    SLOW = "slow"
    LAG = "lag"
    LAG_UNANSWERED = "lag_unanswered"
    KILL_BEFORE = "kill_before"
    KILL_AFTER = "kill_after"


#: Which faults make sense for which call.
_ALLOWED: Final[dict[Call, frozenset[FaultKind]]] = {
    Call.NEW_ORDER: frozenset(FaultKind),
    Call.CANCEL_ORDER: frozenset(FaultKind) - {FaultKind.LAG, FaultKind.LAG_UNANSWERED},
    Call.GET_ORDER: frozenset(
        {
            FaultKind.ERROR_BEFORE,
            FaultKind.UNAVAILABLE,
            FaultKind.SLOW,
            FaultKind.KILL_BEFORE,
            FaultKind.KILL_AFTER,
        }
    ),
}
_ALLOWED[Call.OPEN_ORDERS] = _ALLOWED[Call.GET_ORDER]
_ALLOWED[Call.MY_TRADES] = _ALLOWED[Call.GET_ORDER]


@attrs.frozen
class Fault:
    """One armed fault.

    Attributes:
        kind: What goes wrong.
        delay_s: For ``SLOW``, ``LAG`` and ``LAG_UNANSWERED``: how long (virtual seconds).
    """

    kind: FaultKind
    delay_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        timed = self.kind in (FaultKind.SLOW, FaultKind.LAG, FaultKind.LAG_UNANSWERED)
        if timed and not (self.delay_s > 0 and math.isfinite(self.delay_s)):
            raise ValueError(f"a {self.kind.value} fault needs delay_s > 0, got {self.delay_s}")
        if not timed and self.delay_s != 0:
            raise ValueError(f"a {self.kind.value} fault takes no delay_s, got {self.delay_s}")


@attrs.frozen
class AuditEntry:
    """One order the venue created (the invariant source: never two per client id)."""

    client_order_id: str
    order_id: int
    type: OrderType
    at_s: float


@attrs.frozen
class VenueTrade:
    """One execution of one order."""

    trade_id: int
    order_id: int
    side: Side
    price: Decimal
    quantity: Decimal
    at_s: float
    is_maker: bool


@attrs.define
class VenueOrder:
    """An order as the venue holds it."""

    order_id: int
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce | None
    price: Decimal | None
    quantity: Decimal
    created_at_s: float
    visible_at_s: float
    status: VenueOrderStatus = VenueOrderStatus.NEW
    executed: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    updated_at_s: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    def visible(self, now_s: float) -> bool:
        return now_s >= self.visible_at_s


class _InFlight:
    """The answer to a new order processed by the venue after a delay."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.report: OrderReport | None = None
        self.error: BaseException | None = None


class ModelVenue:
    """The in-memory venue; see the module docstring.

    Args:
        name: Venue name (in reports and errors).
        recv_window_ms: Requests processed later than this after sending are refused (-1021).
        clock: Virtual seconds (``trio.current_time``).
        kill_hook: Called when a ``KILL_*`` fault fires, before
            :class:`ProcessKilledError` is raised (the test marks the caller's
            process dead there).
    """

    def __init__(
        self,
        name: str = "model",
        *,
        recv_window_ms: int = 5000,
        clock: Callable[[], float] = trio.current_time,
        kill_hook: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.recv_window_ms = recv_window_ms
        self.clock = clock
        self.kill_hook = kill_hook
        self.orders: dict[int, VenueOrder] = {}
        self.trades: list[VenueTrade] = []
        self.audit: list[AuditEntry] = []
        self.calls: Counter[Call] = Counter()
        #: New orders refused ``-2010`` because an open order holds their client id
        #: (a resend of an order that exists: its absence was "proven" wrongly).
        self.refused_duplicates: list[AuditEntry] = []
        #: The user data stream: every order change, pushed to the subscribed sessions.
        self.stream = StreamHub(name, clock=clock, event_ms=self._ms)
        self._by_client_id: dict[str, list[VenueOrder]] = {}
        self._faults: dict[Call, deque[Fault]] = {call: deque() for call in Call}
        self._next_order_id = 1001
        self._next_trade_id = 5001
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ test side

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host requests still in flight (``SLOW`` new orders) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def arm(self, call: Call, fault: Fault, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``call`` (after those already armed) fail so.

        Raises:
            ValueError: the fault does not apply to that call, or ``times < 1``.
        """
        if fault.kind not in _ALLOWED[call]:
            raise ValueError(f"a {fault.kind.value} fault does not apply to {call.value}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        self._faults[call].extend([fault] * times)

    def clear_faults(self) -> None:
        """Disarm every fault not consumed yet (the stream's too, and end its stalls)."""
        for queue in self._faults.values():
            queue.clear()
        self.stream.clear_faults()

    def user_stream(
        self,
        *,
        wall_clock_ms: Callable[[], int],
        before_delivery: Callable[[UserStreamEvent], None] | None = None,
    ) -> ModelUserStream:
        """A new user data stream session (``UserStreamSource``) for one process."""
        return ModelUserStream(
            self.stream, wall_clock_ms=wall_clock_ms, before_delivery=before_delivery
        )

    def armed(self) -> dict[Call, list[Fault]]:
        """The faults not consumed yet, per call."""
        return {call: list(queue) for call, queue in self._faults.items() if queue}

    def duplicate_client_ids(self) -> dict[str, list[AuditEntry]]:
        """Client ids that reached the venue as more than one order (must stay empty)."""
        counts = Counter(entry.client_order_id for entry in self.audit)
        return {
            coid: [e for e in self.audit if e.client_order_id == coid]
            for coid, n in counts.items()
            if n > 1
        }

    def open_order_list(self) -> list[VenueOrder]:
        """Open orders, visible or not, oldest first."""
        return sorted((o for o in self.orders.values() if o.is_open), key=lambda o: o.order_id)

    def fill(self, order_id: int, quantity: Decimal | None = None) -> VenueTrade:
        """The market trades against a resting order (all that is left by default).

        Raises:
            ValueError: the order is not open, or ``quantity`` is not in (0, left].
        """
        order = self.orders[order_id]
        left = order.quantity - order.executed
        qty = left if quantity is None else quantity
        if not order.is_open or not (0 < qty <= left):
            raise ValueError(
                f"cannot fill {qty} of order {order_id} ({order.status.value}, {left} left)"
            )
        assert order.price is not None
        return self._trade(order, order.price, qty, is_maker=True)

    def cancel_outside(self, order_id: int) -> None:
        """An operator cancels a resting order on the venue's website.

        Raises:
            ValueError: the order is not open.
        """
        order = self.orders[order_id]
        if not order.is_open:
            raise ValueError(f"order {order_id} is {order.status.value}, not open")
        order.status = VenueOrderStatus.CANCELED
        order.updated_at_s = self.clock()
        self._publish(order, ExecutionType.CANCELED)

    def expire_outside(self, order_id: int) -> None:
        """The venue expires a resting order (self-trade prevention, a delisting…).

        Raises:
            ValueError: the order is not open.
        """
        order = self.orders[order_id]
        if not order.is_open:
            raise ValueError(f"order {order_id} is {order.status.value}, not open")
        order.status = VenueOrderStatus.EXPIRED
        order.updated_at_s = self.clock()
        self._publish(order, ExecutionType.EXPIRED)

    def trades_of(self, order_id: int) -> list[VenueTrade]:
        return [t for t in self.trades if t.order_id == order_id]

    # ------------------------------------------------------------------ the API

    async def new_order(
        self, order: NewOrder, *, on_sent: Callable[[], None] | None = None
    ) -> OrderReport:
        """``POST /api/v3/order`` with a FULL answer (``on_sent``: the request left)."""
        fault = self._take(Call.NEW_ORDER)
        sent_at = self.clock()
        await trio.lowlevel.checkpoint()
        if on_sent is not None:
            on_sent()
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.KILL_BEFORE:
            self._kill("new_order", "before the venue processed it")
        if kind is FaultKind.UNAVAILABLE:
            raise self._unavailable("new_order")
        if kind is FaultKind.REJECT:
            raise OrderRejectedError(
                f"{self.name} POST /api/v3/order: new order rejected "
                "(HTTP 400, code -2010: Account has insufficient balance for requested action.)",
                **self._fields(
                    "new_order",
                    -2010,
                    "Account has insufficient balance for requested action.",
                    400,
                ),
            )
        if kind is FaultKind.ERROR_BEFORE:
            raise self._outcome_unknown("new_order")
        if kind is FaultKind.SLOW:
            assert fault is not None
            return await self._slow_new_order(order, sent_at, fault.delay_s)
        lagging = kind in (FaultKind.LAG, FaultKind.LAG_UNANSWERED)
        lag_s = fault.delay_s if fault is not None and lagging else 0.0
        report = self._place(order, sent_at, lag_s=lag_s)
        if kind in (FaultKind.ERROR_AFTER, FaultKind.LAG_UNANSWERED):
            raise self._outcome_unknown("new_order")
        if kind is FaultKind.HANG_AFTER:
            await trio.sleep_forever()
        if kind is FaultKind.KILL_AFTER:
            self._kill("new_order", "after the venue processed it")
        return report

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        """``GET /api/v3/order``: the most recent visible order with that id."""

        def answer() -> OrderReport:
            found = self._find(client_order_id=client_order_id, order_id=order_id)
            if found is None:
                raise OrderNotFoundError(
                    f"{self.name} GET /api/v3/order: order does not exist "
                    "(HTTP 400, code -2013: Order does not exist.)",
                    **self._fields("get_order", -2013, "Order does not exist.", 400),
                )
            return self.report(found)

        return await self._query(Call.GET_ORDER, answer)

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        """``DELETE /api/v3/order``: cancel the most recent visible open order with that id."""
        fault = self._take(Call.CANCEL_ORDER)
        await trio.lowlevel.checkpoint()
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.KILL_BEFORE:
            self._kill("cancel_order", "before the venue processed it")
        if kind is FaultKind.UNAVAILABLE:
            raise self._unavailable("cancel_order")
        if kind is FaultKind.ERROR_BEFORE:
            raise self._outcome_unknown("cancel_order")
        found = self._find(client_order_id=client_order_id, order_id=order_id)
        if kind is FaultKind.REJECT or found is None or not found.is_open:
            raise CancelRejectedError(
                f"{self.name} DELETE /api/v3/order: cancel rejected "
                "(HTTP 400, code -2011: Unknown order sent.)",
                **self._fields("cancel_order", -2011, "Unknown order sent.", 400),
            )
        found.status = VenueOrderStatus.CANCELED
        found.updated_at_s = self.clock()
        self._publish(found, ExecutionType.CANCELED)
        report = self.report(found)
        if kind is FaultKind.ERROR_AFTER:
            raise self._outcome_unknown("cancel_order")
        if kind is FaultKind.HANG_AFTER:
            await trio.sleep_forever()
        if kind is FaultKind.SLOW:
            assert fault is not None
            await trio.sleep(fault.delay_s)
        if kind is FaultKind.KILL_AFTER:
            self._kill("cancel_order", "after the venue processed it")
        return report

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """``GET /api/v3/openOrders``: visible open orders, oldest first."""

        def answer() -> list[OrderReport]:
            now = self.clock()
            return [
                self.report(o)
                for o in self.open_order_list()
                if o.visible(now) and (symbol is None or o.symbol == symbol)
            ]

        return await self._query(Call.OPEN_ORDERS, answer)

    async def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[FillReport]:
        """``GET /api/v3/myTrades``: our trades (of one order when ``order_id`` is given)."""

        def answer() -> list[FillReport]:
            out = []
            for trade in self.trades:
                order = self.orders[trade.order_id]
                if order.symbol != symbol or (order_id is not None and trade.order_id != order_id):
                    continue
                if from_id is not None and trade.trade_id < from_id:
                    continue
                out.append(self.fill_report(trade))
            return out

        return await self._query(Call.MY_TRADES, answer)

    # ------------------------------------------------------------------ machinery

    def _take(self, call: Call) -> Fault | None:
        self.calls[call] += 1
        queue = self._faults[call]
        return queue.popleft() if queue else None

    async def _query(self, call: Call, answer: Callable[[], T]) -> T:
        fault = self._take(call)
        await trio.lowlevel.checkpoint()
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.KILL_BEFORE:
            self._kill(call.value, "before the venue answered")
        if kind is FaultKind.UNAVAILABLE:
            raise self._unavailable(call.value)
        if kind is FaultKind.ERROR_BEFORE:
            raise VenueUnavailableError(
                f"{self.name} {_ENDPOINTS[call.value]}: venue error (HTTP 503)",
                **self._fields(call.value, None, None, 503),
            )
        # The answer reflects the state when the request arrived, however late it comes back.
        try:
            result = answer()
        except OrderNotFoundError as exc:
            error: OrderNotFoundError | None = exc
        else:
            error = None
        if kind is FaultKind.SLOW:
            assert fault is not None
            await trio.sleep(fault.delay_s)
        if kind is FaultKind.KILL_AFTER:
            self._kill(call.value, "after the venue answered")
        if error is not None:
            raise error
        return result

    async def _slow_new_order(self, order: NewOrder, sent_at: float, delay_s: float) -> OrderReport:
        if self._nursery is None:
            raise RuntimeError("ModelVenue.serve() must run for SLOW new-order faults")
        flight = _InFlight()

        async def process() -> None:
            await trio.sleep(delay_s)
            try:
                flight.report = self._place(order, sent_at, lag_s=0.0)
            except (TimestampOutOfWindowError, DuplicateOrderError) as exc:
                flight.error = exc
            flight.done.set()

        # The request is on the wire: the venue processes it whatever the caller does.
        self._nursery.start_soon(process)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.report is not None
        return flight.report

    def _place(self, order: NewOrder, sent_at: float, *, lag_s: float) -> OrderReport:
        now = self.clock()
        if (now - sent_at) * 1000 > self.recv_window_ms:
            raise TimestampOutOfWindowError(
                f"{self.name} POST /api/v3/order: timestamp outside recvWindow "
                "(HTTP 400, code -1021: Timestamp for this request is outside of the recvWindow.)",
                **self._fields(
                    "new_order",
                    -1021,
                    "Timestamp for this request is outside of the recvWindow.",
                    400,
                ),
            )
        coid = order.client_order_id
        if any(o.is_open for o in self._by_client_id.get(coid, [])):
            self.refused_duplicates.append(AuditEntry(coid, -1, order.type, now))
            raise DuplicateOrderError(
                f"{self.name} POST /api/v3/order: duplicate client order id of an open order "
                "(HTTP 400, code -2010: Duplicate order sent.)",
                **self._fields("new_order", -2010, "Duplicate order sent.", 400),
            )
        assert order.quantity is not None
        placed = VenueOrder(
            order_id=self._next_order_id,
            client_order_id=coid,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            time_in_force=order.time_in_force,
            price=order.price,
            quantity=order.quantity,
            created_at_s=now,
            visible_at_s=now + lag_s,
            updated_at_s=now,
        )
        self._next_order_id += 1
        self.orders[placed.order_id] = placed
        self._by_client_id.setdefault(coid, []).append(placed)
        self.audit.append(AuditEntry(coid, placed.order_id, order.type, now))
        self._publish(placed, ExecutionType.NEW)
        fills: list[VenueTrade] = []
        if order.type is OrderType.MARKET:
            # Two trades, so a partial view of the fills is possible and trade ids differ.
            first = (order.quantity / 2).quantize(_QTY_STEP)
            if first > 0:
                fills.append(self._trade(placed, MARKET_PRICE, first, is_maker=False))
            fills.append(
                self._trade(
                    placed,
                    MARKET_PRICE + Decimal("0.01"),
                    order.quantity - placed.executed,
                    is_maker=False,
                )
            )
        return self.report(placed, fills=fills)

    def _trade(
        self, order: VenueOrder, price: Decimal, quantity: Decimal, *, is_maker: bool
    ) -> VenueTrade:
        now = self.clock()
        trade = VenueTrade(
            self._next_trade_id, order.order_id, order.side, price, quantity, now, is_maker
        )
        self._next_trade_id += 1
        self.trades.append(trade)
        order.executed += quantity
        order.cum_quote += price * quantity
        order.status = (
            VenueOrderStatus.FILLED
            if order.executed >= order.quantity
            else VenueOrderStatus.PARTIALLY_FILLED
        )
        order.updated_at_s = now
        self._publish(order, ExecutionType.TRADE, trade)
        return trade

    def fill_report(self, trade: VenueTrade) -> FillReport:
        """``trade`` as a ``myTrades`` row (and the fill of its ``executionReport``)."""
        order = self.orders[trade.order_id]
        return FillReport(
            venue=self.name,
            symbol=order.symbol,
            trade_id=trade.trade_id,
            order_id=trade.order_id,
            price=trade.price,
            quantity=trade.quantity,
            quote_quantity=trade.price * trade.quantity,
            commission=Decimal(0),
            commission_asset="BNB",
            time_ms=self._ms(trade.at_s),
            is_buyer=order.side is Side.BUY,
            is_maker=trade.is_maker,
        )

    def _publish(
        self, order: VenueOrder, kind: ExecutionType, trade: VenueTrade | None = None
    ) -> None:
        """Push the ``executionReport`` of this change of ``order`` (now) on the stream."""
        now = self.clock()
        self.stream.publish(
            ExecutionReport(
                report=self.report(order),
                execution_type=kind,
                event_time_ms=self._ms(now),
                transaction_time_ms=self._ms(order.updated_at_s),
                fill=None if trade is None else self.fill_report(trade),
                execution_id=self.stream.next_execution_id(),
            )
        )

    def _find(self, *, client_order_id: str | None, order_id: int | None) -> VenueOrder | None:
        now = self.clock()
        if order_id is not None:
            order = self.orders.get(order_id)
            if order is None or not order.visible(now):
                return None
            if client_order_id is not None and order.client_order_id != client_order_id:
                return None
            return order
        if client_order_id is None:
            raise ValueError("a query needs client_order_id or order_id")
        for order in reversed(self._by_client_id.get(client_order_id, [])):
            if order.visible(now):
                return order
        return None

    def report(self, order: VenueOrder, fills: list[VenueTrade] | None = None) -> OrderReport:
        """What the venue answers about ``order`` now (with ``fills`` in a new-order answer)."""
        return OrderReport(
            venue=self.name,
            symbol=order.symbol,
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            status=order.status,
            side=order.side,
            type=order.type,
            time_in_force=order.time_in_force,
            price=order.price if order.price is not None else Decimal(0),
            orig_qty=order.quantity,
            executed_qty=order.executed,
            cumulative_quote_qty=order.cum_quote,
            time_ms=self._ms(order.created_at_s),
            update_time_ms=self._ms(order.updated_at_s),
            fills=tuple(
                OrderFill(t.price, t.quantity, Decimal(0), "BNB", t.trade_id) for t in fills or ()
            ),
        )

    def _ms(self, at_s: float) -> int:
        return EPOCH_MS + round(at_s * 1000)

    def _fields(
        self, call: str, code: int | None, message: str | None, http_status: int | None
    ) -> VenueErrorFields:
        return VenueErrorFields(
            venue=self.name,
            code=code,
            venue_message=message,
            http_status=http_status,
            endpoint=_ENDPOINTS[call],
        )

    def _outcome_unknown(self, call: str) -> VenueOutcomeUnknownError:
        return VenueOutcomeUnknownError(
            f"{self.name} {_ENDPOINTS[call]}: outcome unknown, the request may have taken "
            "effect (HTTP 503)",
            **self._fields(call, None, None, 503),
        )

    def _unavailable(self, call: str) -> VenueUnavailableError:
        return VenueUnavailableError(
            f"{self.name} {_ENDPOINTS[call]}: connect error, not sent",
            **self._fields(call, None, None, None),
        )

    def _kill(self, call: str, when: str) -> NoReturn:
        if self.kill_hook is None:
            raise RuntimeError(f"a kill fault fired in {call} but the venue has no kill_hook")
        self.kill_hook()
        raise ProcessKilledError(f"process killed in {call}, {when}")
