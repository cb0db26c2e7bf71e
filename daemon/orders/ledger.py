"""The in-memory view of live orders, and the one place that changes an order's state.

Every state change of an order goes through :class:`OrderLedger`, which

1. holds the order's lock (one change at a time per order, whoever asks:
   executor, tracker, reconciler),
2. checks the change against what we hold *now* (an observation that went
   stale while its query was in flight becomes a no-op or a contradiction,
   never a silent overwrite),
3. persists it (history row included) in one CRITICAL transaction, together
   with the fills that came with it, and only then
4. updates memory and the risk book (fills move the position; a terminal
   state releases the reservation).

Two changes need no venue at all: a cancel of an intent still PENDING ends
it here (PENDING → CANCELED with its cancel mark, :meth:`OrderLedger.cancel`;
the order's lock proves its send section has not started), and a send a
rate limit proved unexecuted goes back to PENDING
(:meth:`OrderLedger.mark_not_sent`), durably, before it is queued again.

Memory holds the non-terminal orders (the working set the executor, tracker
and reconciler act on); terminal ones are dropped once recorded. The store
is the truth; memory is rebuilt from it at every start (:meth:`load`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Protocol

import attrs
import trio

from daemon.errors import VenueError
from daemon.model.instruments import ExchangeInfo
from daemon.model.orders import FillReport, NewOrder, OrderReport
from daemon.orders.records import FillRecord, IntentRecord
from daemon.orders.state import (
    OrderState,
    from_order_report,
    path_to_venue_state,
    transition,
)
from daemon.resilience.deadletter import DeadLetter, DeadLetterStore, JsonValue
from daemon.risk.checks import RiskRequest
from daemon.risk.pretrade import PreTradeRisk
from daemon.store.orders import OrderStore

__all__ = ["DEAD_LETTER_SOURCE", "OrderLedger", "OrderVenue", "VenueAccess"]

log = logging.getLogger("tradingd.orders")

#: Where definitively rejected orders go in the dead-letter table.
DEAD_LETTER_SOURCE = "orders"


class OrderVenue(Protocol):
    """The order calls the pipeline makes (``BinanceVenue`` implements them)."""

    async def new_order(
        self, order: NewOrder, *, on_sent: Callable[[], None] | None = None
    ) -> OrderReport:
        """Place ``order``; ``on_sent()`` once the request is written (the venue may act)."""
        ...

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport: ...

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport: ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]: ...

    async def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[FillReport]: ...


class VenueAccess(Protocol):
    """How the pipeline reaches venues: the live clients of the venue links."""

    def client(self, venue: str) -> OrderVenue | None:
        """The venue's client now, or ``None`` while it is down."""
        ...

    async def wait_client(self, venue: str) -> OrderVenue:
        """Wait until the venue has answered once; its client."""
        ...

    def exchange_info(self, venue: str) -> ExchangeInfo | None:
        """The venue's symbols and filters, once loaded."""
        ...

    def recv_window_ms(self, venue: str) -> int:
        """The ``recvWindow`` requests to the venue carry."""
        ...


def fill_records(record: IntentRecord, fills: Iterable[FillReport]) -> list[FillRecord]:
    """Our fill rows for ``record`` from the venue's trade reports (other orders' skipped)."""
    out = []
    for fill in fills:
        if record.venue_order_id is not None and fill.order_id != record.venue_order_id:
            continue
        out.append(
            FillRecord(
                venue=record.venue,
                symbol=record.symbol,
                trade_id=fill.trade_id,
                client_order_id=record.client_order_id,
                account=record.account,
                venue_order_id=fill.order_id,
                side=record.side,
                price=fill.price,
                quantity=fill.quantity,
                quote_quantity=fill.quote_quantity,
                commission=fill.commission,
                commission_asset=fill.commission_asset,
                time_ms=fill.time_ms,
                is_maker=fill.is_maker,
            )
        )
    return out


def report_fill_records(record: IntentRecord, report: OrderReport) -> list[FillRecord]:
    """Fill rows from the ``fills`` of a new-order (FULL) answer."""
    out = []
    for fill in report.fills:
        out.append(
            FillRecord(
                venue=record.venue,
                symbol=record.symbol,
                trade_id=fill.trade_id,
                client_order_id=record.client_order_id,
                account=record.account,
                venue_order_id=report.order_id,
                side=record.side,
                price=fill.price,
                quantity=fill.quantity,
                quote_quantity=fill.price * fill.quantity,
                commission=fill.commission,
                commission_asset=fill.commission_asset,
                time_ms=report.time_ms or report.update_time_ms or 0,
                is_maker=None,
            )
        )
    return out


class LatencyLog:
    """The last ``size`` latencies (seconds) of one kind, with quantiles for /status and bench."""

    def __init__(self, size: int = 100_000) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.values.append(seconds)
        self.count += 1

    def quantile(self, q: float) -> float | None:
        found = self.quantiles((q,))
        return found[0] if found else None

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """The ``qs`` quantiles of the kept latencies (one sort for all); ``[]`` when none."""
        if not self.values:
            return []
        ordered = sorted(self.values)
        return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]

    def clear(self) -> None:
        self.values.clear()

    def snapshot(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "count": self.count,
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.quantile(1.0)),
        }


class OrderLedger:
    """Live orders in memory, their locks, and every durable change to them.

    Args:
        store: The order tables.
        risk: The pre-trade risk gate (its book follows fills and ends).
        dead_letters: Where definitive rejects go.
        wall_clock: Epoch seconds.
    """

    def __init__(
        self,
        store: OrderStore,
        risk: PreTradeRisk,
        dead_letters: DeadLetterStore | None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.risk = risk
        self.dead_letters = dead_letters
        self.wall_clock = wall_clock
        self.records: dict[str, IntentRecord] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        #: Entry time (trio clock) of intents created by this incarnation, until
        #: the venue's answer to their first send is persisted.
        self.received_at: dict[str, float] = {}
        #: Submission received -> intent durable (the caller's answer).
        self.commit_latency = LatencyLog()
        #: Submission received -> the venue's answer to the first send persisted.
        self.answer_latency = LatencyLog()
        #: Counters for metrics and /status.
        self.transitions = 0
        self.rejected = 0
        self.unknown = 0
        self.resends = 0
        self.not_sent = 0
        #: Reports that moved an order's executed quantity (each records one fill or more).
        self.fills = 0
        self.contradictions = 0

    # ------------------------------------------------------------------ memory

    def get(self, client_order_id: str) -> IntentRecord | None:
        """The live (non-terminal) record, or ``None``."""
        return self.records.get(client_order_id)

    def live(self, states: Iterable[OrderState] | None = None) -> list[IntentRecord]:
        """Live records (optionally in ``states``), in submission order."""
        wanted = set(states) if states is not None else None
        found = [r for r in self.records.values() if wanted is None or r.state in wanted]
        found.sort(key=lambda r: r.seq)
        return found

    def counts(self) -> dict[str, int]:
        """Live orders per state."""
        out: dict[str, int] = {}
        for record in self.records.values():
            out[record.state.value] = out.get(record.state.value, 0) + 1
        return out

    def admit(self, records: Sequence[IntentRecord]) -> None:
        """Take freshly recorded PENDING intents into memory."""
        for record in records:
            self.records[record.client_order_id] = record

    def _remember(self, record: IntentRecord) -> None:
        if record.is_terminal:
            self.records.pop(record.client_order_id, None)
        else:
            self.records[record.client_order_id] = record

    def lock(self, client_order_id: str) -> _OrderLock:
        """``async with ledger.lock(coid):`` — one state change at a time per order."""
        return _OrderLock(self, client_order_id)

    # ------------------------------------------------------------------ start-up

    async def load(self) -> list[IntentRecord]:
        """Rebuild memory and the risk book from the store (start of an incarnation)."""
        records = await self.store.non_terminal()
        positions = await self.store.positions()
        filled = await self.store.filled_of_unfinished()
        self.records = {r.client_order_id: r for r in records}
        book = self.risk.book
        for (account, symbol), quantity in positions.items():
            book.set_position(account, symbol, quantity)
        for record in records:
            if book.find(record.client_order_id) is not None:
                continue
            request = RiskRequest(account=record.account, order=record.to_intent().to_new_order())
            # The positions hold every stored fill, and the stored fills may be ahead
            # of the record's executed_qty (a fills query answered after a status
            # query): the reservation counts as executed whichever is more, so a
            # later report moves the position only by what no stored fill holds.
            executed = max(record.executed_qty, filled.get(record.client_order_id, Decimal(0)))
            book.restore(request, executed_qty=min(executed, record.quantity))
        return sorted(records, key=lambda r: r.seq)

    # ------------------------------------------------------------------ changes

    async def _move(self, record: IntentRecord, target: OrderState, reason: str) -> IntentRecord:
        new = await self.store.apply_transition(
            record.client_order_id, transition(record.state, target, reason=reason)
        )
        self._remember(new)
        self.transitions += 1
        return new

    async def mark_sending(self, record: IntentRecord) -> IntentRecord:
        """PENDING → SENDING, durably, before the request is built (caller holds the lock)."""
        return await self._move(record, OrderState.SENDING, "sending new order")

    async def mark_unknown(self, record: IntentRecord, reason: str) -> IntentRecord:
        """SENDING → UNKNOWN: the send's outcome is ambiguous (caller holds the lock)."""
        new = await self._move(record, OrderState.UNKNOWN, reason)
        self.unknown += 1
        log.warning("order %s: outcome UNKNOWN (%s)", record.client_order_id, reason)
        return new

    async def mark_resend(self, record: IntentRecord, reason: str) -> IntentRecord:
        """UNKNOWN → PENDING after proven absence (caller holds the lock)."""
        new = await self._move(record, OrderState.PENDING, reason)
        self.resends += 1
        log.warning("order %s: %s", record.client_order_id, reason)
        return new

    async def mark_not_sent(self, record: IntentRecord, reason: str) -> IntentRecord:
        """SENDING → PENDING: the request provably never took effect (a rate limit; the
        reason starts with one of :data:`~daemon.orders.state.NOT_EXECUTED_CAUSES`).
        Durable, with its history row, before the intent may be queued again (caller
        holds the lock)."""
        new = await self._move(record, OrderState.PENDING, reason)
        self.not_sent += 1
        log.warning("order %s back to PENDING: %s", record.client_order_id, reason)
        return new

    async def cancel(self, record: IntentRecord) -> IntentRecord:
        """The operator's or strategy's cancel (caller holds the lock): a PENDING intent
        is canceled here and now (its send section has not started: that takes the
        lock); anything later gets a durable cancel request the executor sends."""
        if record.state is not OrderState.PENDING:
            return await self.request_cancel(record)
        return await self.cancel_unsent(record, "canceled before sending")

    async def cancel_unsent(self, record: IntentRecord, reason: str) -> IntentRecord:
        """PENDING → CANCELED without a venue request, the cancel request marked in the
        same transaction; releases the risk reservation (caller holds the lock)."""
        new = await self.store.cancel_unsent(
            record.client_order_id, transition(record.state, OrderState.CANCELED, reason=reason)
        )
        self._remember(new)
        self.transitions += 1
        self._release(new)
        self.received_at.pop(record.client_order_id, None)
        log.info("order %s: %s", record.client_order_id, reason)
        return new

    async def mark_rejected(
        self, record: IntentRecord, error: BaseException, *, code: int | None, message: str
    ) -> IntentRecord:
        """SENDING → REJECTED with the venue's reason and a dead letter (caller holds the lock)."""
        reason = (
            f"venue rejected: {code}: {message}" if code is not None else f"rejected: {message}"
        )
        new = await self.store.apply_transition(
            record.client_order_id,
            transition(record.state, OrderState.REJECTED, reason=reason[:500]),
            reject_code=code,
            reject_reason=message[:500],
        )
        self._remember(new)
        self.transitions += 1
        self.rejected += 1
        self._release(new)
        log.warning("order %s rejected: %s", record.client_order_id, reason)
        if self.dead_letters is not None:
            try:
                await self.dead_letters.add(dead_letter(record, error, self.wall_clock))
            except Exception:  # the REJECTED row is durable; the letter is a copy
                log.exception("order %s: dead letter not stored", record.client_order_id)
        return new

    async def apply_report(
        self,
        record: IntentRecord,
        report: OrderReport,
        *,
        reason: str,
        fills: Sequence[FillReport] = (),
    ) -> IntentRecord:
        """Bring ``record`` up to what a venue report says (caller holds the lock).

        Old news changes nothing but fills and quantities; a contradiction is
        logged and left for an operator (the record stays as it is).
        """
        observed = from_order_report(report)
        try:
            steps = path_to_venue_state(record.state, observed, reason=reason)
        except Exception as exc:
            self.contradictions += 1
            log.error(
                "order %s: venue report contradicts our records (%s); left as %s",
                record.client_order_id,
                exc,
                record.state.value,
            )
            return record
        executed = report.executed_qty
        cum_quote = report.cumulative_quote_qty
        if executed is not None and executed < record.executed_qty:
            executed = None  # an older report: quantities never move backwards
            cum_quote = None
        with_id = record
        if record.venue_order_id is None:
            with_id = _replace_venue_id(record, report.order_id)
        rows = report_fill_records(with_id, report) + fill_records(with_id, fills)
        if (
            not steps
            and not rows
            and record.venue_order_id == report.order_id
            and (executed is None or executed == record.executed_qty)
            and (cum_quote is None or cum_quote == record.cum_quote_qty)
        ):
            return record  # nothing new: no write
        new = await self.store.apply_changes(
            record.client_order_id,
            steps,
            venue_order_id=report.order_id,
            executed_qty=executed,
            cum_quote_qty=cum_quote,
            fills=rows,
        )
        self.transitions += len(steps)
        if new.executed_qty > record.executed_qty:
            self.fills += 1  # the executed quantity moved: one or more fills recorded
        self._remember(new)
        self._follow_risk(new)
        if steps:
            log.info(
                "order %s: %s (%s)",
                record.client_order_id,
                " -> ".join([steps[0].source.value, *(s.target.value for s in steps)]),
                reason,
            )
        return new

    async def request_cancel(self, record: IntentRecord) -> IntentRecord:
        new = await self.store.request_cancel(record.client_order_id)
        self._remember(new)
        return new

    # ------------------------------------------------------------------ risk

    def _follow_risk(self, record: IntentRecord) -> None:
        reservation = self.risk.book.find(record.client_order_id)
        if reservation is None:
            return
        try:
            if record.is_terminal:
                reservation.release(filled_qty=record.executed_qty)
            elif record.executed_qty > reservation.executed_qty:
                reservation.record_fill(record.executed_qty)
        except Exception:
            log.exception("order %s: risk book update failed", record.client_order_id)

    def _release(self, record: IntentRecord) -> None:
        reservation = self.risk.book.find(record.client_order_id)
        if reservation is not None:
            try:
                reservation.release(filled_qty=record.executed_qty)
            except Exception:
                log.exception("order %s: risk release failed", record.client_order_id)

    def answered(self, client_order_id: str) -> None:
        """The venue's answer to an intent's first send is durable: record the latency."""
        started = self.received_at.pop(client_order_id, None)
        if started is not None:
            self.answer_latency.add(trio.current_time() - started)

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency": {
                "received_to_committed": self.commit_latency.snapshot(),
                "received_to_answer_persisted": self.answer_latency.snapshot(),
            },
            "live": len(self.records),
            "by_state": self.counts(),
            "transitions": self.transitions,
            "rejected": self.rejected,
            "unknown": self.unknown,
            "resends": self.resends,
            "not_sent": self.not_sent,
            "fills": self.fills,
            "contradictions": self.contradictions,
        }


def dead_letter(
    record: IntentRecord, error: BaseException, wall_clock: Callable[[], float]
) -> DeadLetter:
    """The dead letter of a rejected intent: its request and venue, and the error."""
    request: dict[str, JsonValue] = dict(record.to_intent().to_request())
    payload: JsonValue = {"intent": request, "venue": record.venue}
    return DeadLetter.from_error(
        payload, error, source=DEAD_LETTER_SOURCE, key=record.client_order_id, now=wall_clock
    )


def _replace_venue_id(record: IntentRecord, venue_order_id: int) -> IntentRecord:
    return attrs.evolve(record, venue_order_id=venue_order_id)


class _OrderLock:
    def __init__(self, ledger: OrderLedger, key: str) -> None:
        self._ledger = ledger
        self._key = key

    async def __aenter__(self) -> None:
        ledger = self._ledger
        lock = ledger._locks.get(self._key)
        if lock is None:
            lock = ledger._locks[self._key] = trio.Lock()
        ledger._lock_users[self._key] = ledger._lock_users.get(self._key, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._drop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        ledger = self._ledger
        ledger._locks[self._key].release()
        self._drop()

    def _drop(self) -> None:
        ledger = self._ledger
        users = ledger._lock_users[self._key] - 1
        if users:
            ledger._lock_users[self._key] = users
        else:
            del ledger._lock_users[self._key]
            del ledger._locks[self._key]


def venue_error_code(exc: BaseException) -> tuple[int | None, str]:
    """The venue's error code and message of ``exc`` (for REJECTED rows)."""
    if isinstance(exc, VenueError):
        code = getattr(exc, "code", None)
        message = getattr(exc, "venue_message", None) or str(exc)
        return (code if isinstance(code, int) else None), str(message)
    return None, str(exc)
