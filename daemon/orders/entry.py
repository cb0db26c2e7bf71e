"""Order entry and the durable outbox: validate, risk-check, group-commit, hand over.

A submission (``POST /orders`` or a strategy's ``submit``) is answered only
after its intent row is committed with ``synchronous=FULL`` — and before any
network I/O for it. The path::

    submit() ─ validate (400) ─ same id live/in flight? (200) ─ admit (503) ─► entry queue
                                                                                 │
    writer task: take everything queued (≤ group_commit_max) ◄───────────────────┘
        1. pre-trade risk for each intent: a pass reserves its limits; a refusal
           is a 422 (or a 503 while the venue's exchangeInfo is not loaded)
        2. the refused ones only are looked up in the store: an intent recorded
           before answers 200 (or 409 when the message id was used for a
           different order), even if it would be refused now; the rest get
           their refusal
        3. ONE transaction inserts every passed intent (PENDING, or SENDING on the
           fast path below) and its history row; an id already stored is not
           inserted: its reservation is rolled back and it answers 200 (or 409)
        4. commit the reservations, answer 202, hand each intent to its account's queue
           (on a failed commit: roll the reservations back, answer 503)

Risk runs first so that the common path (nothing refused) is one store write
per batch and no read.

**Group commit.** The writer is one task, so while one commit is in flight
every submission that arrives queues up and goes into the *next* commit:
with N concurrent submitters a commit carries up to N intents, and durability
costs one fsync per batch, not per order.

**Admission before commit.** The entry queue is bounded (``entry_queue_capacity``)
and each account's work queue slot is reserved before the commit
(:meth:`~daemon.orders.dispatch.Dispatcher.reserve`): an intent that is
committed always has a place in its account's queue, so submit order is
preserved, and a saturated pipeline says 503 with ``Retry-After`` *before*
anything is recorded rather than after.

**On the wire first.** An intent that goes out at once (the fast path:
its account's queue is idle) is answered when its request has been written
to the venue connection, or after ``answer_hold_ms`` at the most — never
before its commit. On one event loop, writing a caller's answer (an HTTP
response, a strategy's next step) before the order would delay the order;
after it, the answer is written while the venue works.

**Idempotency.** ``client_order_id`` is derived from ``(message_id, account,
symbol)``; the same message again finds the same row (in memory, in the
current batch, or in the store) and never creates a second intent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs
import trio

from daemon.config import OrdersConfig
from daemon.errors import RiskRejectedError, StoreError, TradingdError
from daemon.orders.dispatch import Dispatcher, WorkItem
from daemon.orders.executor import SendSignals
from daemon.orders.gateway import (
    EntrySaturatedError,
    EntryUnavailableError,
    IntentConflictError,
    SubmitResult,
)
from daemon.orders.intent import IntentProblem, IntentValidationError, OrderIntent, ProblemCode
from daemon.orders.ledger import OrderLedger, VenueAccess
from daemon.orders.records import IntentRecord
from daemon.risk.checks import RiskRequest
from daemon.risk.reservation import Reservation

__all__ = ["Entry", "EntryStats"]

log = logging.getLogger("tradingd.orders.entry")


@attrs.define
class EntryStats:
    submitted: int = 0
    created: int = 0
    duplicates: int = 0
    invalid: int = 0
    risk_rejected: int = 0
    saturated: int = 0
    conflicts: int = 0
    commits: int = 0
    commit_failures: int = 0
    batch_max: int = 0
    batched_total: int = 0
    fast_path: int = 0


class _Pending:
    """One submission waiting for the writer."""

    __slots__ = ("done", "error", "intent", "on_wire", "received", "reserved_account", "result")

    def __init__(self, intent: OrderIntent) -> None:
        self.intent = intent
        self.done = trio.Event()
        #: Set once the request is written (fast path only; see the module docstring).
        self.on_wire: trio.Event | None = None
        self.result: SubmitResult | None = None
        self.error: BaseException | None = None
        self.reserved_account: str | None = None
        self.received = 0.0

    def finish(
        self, result: SubmitResult | None = None, error: BaseException | None = None
    ) -> None:
        self.result = result
        self.error = error
        self.done.set()


class Entry:
    """The submit path and the group-commit writer of one pipeline incarnation.

    Args:
        ledger: Live orders (memory) and the store behind them.
        dispatcher: Per-account work queues.
        venues: Venue clients and reference data.
        accounts: Account name → venue name (``[accounts.NAME] venue``).
        settings: ``[orders]``.
        reference_price: ``(venue, symbol) -> Decimal | None`` — a recent
            market price (MARKET orders' notional, price bands).
        executor_ready: ``account -> bool``: sending is enabled and the
            account's venue is up (the fast path is taken only then).
        stranded: Where intents marked SENDING by the fast path go when their
            work item cannot be queued (the executor settles them).
        send_signals: Where a fast-path intent asks to hear that its request
            is written (the executor's); ``None`` answers at the commit.
    """

    def __init__(
        self,
        ledger: OrderLedger,
        dispatcher: Dispatcher,
        venues: VenueAccess,
        accounts: Mapping[str, str],
        settings: OrdersConfig,
        *,
        reference_price: Callable[[str, str], Decimal | None] | None = None,
        executor_ready: Callable[[str], bool] = lambda account: False,
        stranded: set[str] | None = None,
        send_signals: SendSignals | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.executor_ready = executor_ready
        self.send_signals = send_signals if settings.answer_hold_ms > 0 else None
        self.stranded = stranded if stranded is not None else set()
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.venues = venues
        self.accounts = dict(accounts)
        self.settings = settings
        self.reference_price = reference_price
        self.wall_clock = wall_clock
        self.stats = EntryStats()
        self._send, self._receive = trio.open_memory_channel[_Pending](
            settings.entry_queue_capacity
        )
        self._inflight: dict[str, _Pending] = {}
        self._open = True
        self._batch_sizes: list[int] = []
        self._flushed: list[trio.Event] = []

    # ------------------------------------------------------------------ submit

    @property
    def queued(self) -> int:
        return len(self._inflight)

    def close(self) -> None:
        """Refuse new submissions (graceful stop); queued ones are still committed."""
        self._open = False

    async def submit(self, request: Mapping[str, Any] | OrderIntent) -> SubmitResult:
        """Record one intent durably; see the module docstring for the answers."""
        self.stats.submitted += 1
        received = trio.current_time()
        try:
            intent = (
                request
                if isinstance(request, OrderIntent)
                else OrderIntent.from_request(request, id_prefix=self.settings.id_prefix)
            )
        except IntentValidationError:
            self.stats.invalid += 1
            raise
        if intent.account not in self.accounts:
            self.stats.invalid += 1
            known = ", ".join(sorted(self.accounts)) or "none configured"
            raise IntentValidationError(
                [
                    IntentProblem(
                        ProblemCode.UNKNOWN_ACCOUNT,
                        "account",
                        f"no [accounts.{intent.account}] is configured (known: {known})",
                    )
                ]
            )
        coid = intent.client_order_id
        live = self.ledger.get(coid)
        if live is not None:
            return self._again(live, intent)
        waiting = self._inflight.get(coid)
        if waiting is not None:
            await waiting.done.wait()
            if waiting.error is not None:
                raise waiting.error
            assert waiting.result is not None
            return self._again(waiting.result.record, intent)
        if not self._open:
            raise EntryUnavailableError("order entry is stopping: submit again after the restart")
        pending = _Pending(intent)
        pending.received = received
        try:
            self.dispatcher.reserve(intent.account)
        except TradingdError as exc:
            self.stats.saturated += 1
            retry = float(getattr(exc, "retry_after_s", 1.0))
            raise EntrySaturatedError(str(exc), retry_after_s=retry) from exc
        pending.reserved_account = intent.account
        try:
            self._send.send_nowait(pending)
        except trio.WouldBlock:
            self.dispatcher.release(intent.account)
            self.stats.saturated += 1
            raise EntrySaturatedError(
                f"order entry queue is full ({self.settings.entry_queue_capacity} waiting "
                f"for the store: orders.entry_queue_capacity)",
                retry_after_s=self._retry_after(),
            ) from None
        self._inflight[coid] = pending
        # Not cancellable from here on: the writer decides, the caller may leave.
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        on_wire = pending.on_wire
        if on_wire is not None:
            # Committed; the order is going out now. Answer once it is written.
            with trio.move_on_after(self.settings.answer_hold_ms / 1000):
                await on_wire.wait()
            if self.send_signals is not None:
                self.send_signals.forget(coid, on_wire)
        return pending.result

    def _again(self, record: IntentRecord, intent: OrderIntent) -> SubmitResult:
        differing = record.to_intent().differing_fields(intent)
        if differing:
            self.stats.conflicts += 1
            raise IntentConflictError(record.client_order_id, differing)
        self.stats.duplicates += 1
        return SubmitResult(record, created=False)

    def _retry_after(self) -> float:
        """Roughly how long the writer needs for what is queued (1-5 s)."""
        sizes = self._batch_sizes[-8:]
        per_batch = max(1, max(sizes, default=1))
        return float(max(1, min(5, math.ceil(len(self._inflight) / per_batch / 100))))

    # ------------------------------------------------------------------ writer

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The group-commit writer: runs until cancelled; drains what is queued first."""
        task_status.started()
        async for first in self._receive:
            batch = [first]
            while len(batch) < self.settings.group_commit_max:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            with trio.CancelScope(shield=True):
                # A batch is finished as a whole: every caller gets an answer.
                await self._write_batch(batch)
            if not self._inflight:
                waiters, self._flushed = self._flushed, []
                for event in waiters:
                    event.set()

    async def wait_flushed(self) -> None:
        """Wait until every queued submission has been answered (after :meth:`close`)."""
        while self._inflight:
            event = trio.Event()
            self._flushed.append(event)
            await event.wait()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        self.stats.batch_max = max(self.stats.batch_max, len(batch))
        self.stats.batched_total += len(batch)
        self._batch_sizes.append(len(batch))
        del self._batch_sizes[:-64]
        fresh: list[tuple[_Pending, Reservation]] = []
        refused: list[tuple[_Pending, BaseException]] = []
        for pending in batch:
            outcome = self._risk(pending.intent)
            if isinstance(outcome, BaseException):
                refused.append((pending, outcome))
            else:
                fresh.append((pending, outcome))
        if refused:
            await self._answer_refused(refused)
        if not fresh:
            return
        # Fast path: the first intent of an account whose queue is idle is marked
        # SENDING in the same transaction, saving the executor one commit.
        sending: set[str] = set()
        seen: set[str] = set()
        for pending, _ in fresh:
            intent = pending.intent
            if (
                intent.account not in seen
                and self.dispatcher.is_idle(intent.account)
                and self.executor_ready(intent.account)
            ):
                sending.add(intent.client_order_id)
            seen.add(intent.account)
        now_ms = int(self.wall_clock() * 1000)
        rows = [
            IntentRecord.from_intent(p.intent, venue=self.accounts[p.intent.account], now_ms=now_ms)
            for p, _ in fresh
        ]
        try:
            inserted, existing = await self.ledger.store.record_intents(rows, sending=sending)
        except Exception as exc:
            for _, reservation in fresh:
                reservation.rollback()
            self._fail([p for p, _ in fresh], exc)
            return
        self.stats.commits += 1
        self.ledger.admit(inserted)
        by_id = {record.client_order_id: record for record in inserted}
        now = trio.current_time()
        for pending, reservation in fresh:
            coid = pending.intent.client_order_id
            record = by_id.get(coid)
            if record is None:
                # Recorded before (an earlier batch, an earlier process): not a new intent.
                reservation.rollback()
                self._settle(pending)
                try:
                    pending.finish(self._again(existing[coid], pending.intent))
                except IntentConflictError as exc:
                    pending.finish(error=exc)
                continue
            reservation.commit()
            self._inflight.pop(coid, None)
            kind = "send" if coid in sending else "place"
            if kind == "send" and self.send_signals is not None:
                pending.on_wire = self.send_signals.expect(coid)
            queued = self.dispatcher.submit(WorkItem(record.account, coid, kind), reserved=True)
            if not queued and kind == "send":
                # The workers are gone (stopping): the row is durable either way;
                # a SENDING one is moved to UNKNOWN and resolved by query.
                self.stranded.add(coid)
                if pending.on_wire is not None and self.send_signals is not None:
                    self.send_signals.forget(coid, pending.on_wire)
                    pending.on_wire = None
            pending.reserved_account = None
            self.stats.created += 1
            if coid in sending:
                self.stats.fast_path += 1
            self.ledger.commit_latency.add(now - pending.received)
            self.ledger.received_at[coid] = pending.received
            pending.finish(SubmitResult(record, created=True))

    async def _answer_refused(self, refused: list[tuple[_Pending, BaseException]]) -> None:
        """Answer intents risk refused — unless the message id was recorded before.

        A resubmission of an intent recorded earlier must get its 200 even when
        risk would refuse it *now* (halted, rate used up, …): it is not a new
        order. Only refused ones are looked up, so the common path stays one
        write per batch.
        """
        try:
            stored = await self.ledger.store.load([p.intent.client_order_id for p, _ in refused])
        except StoreError as exc:
            self._fail([p for p, _ in refused], exc)
            return
        for pending, error in refused:
            self._settle(pending)
            record = stored.get(pending.intent.client_order_id)
            if record is None:
                pending.finish(error=error)
                continue
            try:
                pending.finish(self._again(record, pending.intent))
            except IntentConflictError as exc:
                pending.finish(error=exc)

    def _risk(self, intent: OrderIntent) -> Reservation | BaseException:
        venue = self.accounts[intent.account]
        info = self.venues.exchange_info(venue)
        if info is None:
            return EntryUnavailableError(
                f"venue {venue} has not answered yet (no exchangeInfo): cannot check the "
                "order against its filters; retry shortly",
                retry_after_s=2.0,
            )
        symbol_info = info.symbols.get(intent.symbol)
        reference = None
        if self.reference_price is not None:
            reference = self.reference_price(venue, intent.symbol)
        request = RiskRequest(
            account=intent.account, order=intent.to_new_order(), reference_price=reference
        )
        outcome = self.ledger.risk.submit(request, symbol_info)
        if isinstance(outcome, Reservation):
            return outcome
        self.stats.risk_rejected += 1
        return RiskRejectedError(outcome.reasons)

    def _settle(self, pending: _Pending) -> None:
        """Give back what an intent that will not be recorded held."""
        self._inflight.pop(pending.intent.client_order_id, None)
        if pending.reserved_account is not None:
            self.dispatcher.release(pending.reserved_account)
            pending.reserved_account = None

    def _fail(self, batch: Sequence[_Pending], exc: BaseException) -> None:
        self.stats.commit_failures += 1
        log.error("order entry: commit of %d intents failed: %s", len(batch), exc)
        for pending in batch:
            self._settle(pending)
            pending.finish(
                error=EntryUnavailableError(
                    f"the store could not record the intent ({type(exc).__name__}); "
                    "nothing was recorded: submit again",
                    retry_after_s=1.0,
                )
            )

    def fail_queued(self) -> int:
        """Answer every submission still queued with 503 (the pipeline is going away)."""
        count = 0
        while True:
            try:
                pending = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self._settle(pending)
            pending.finish(
                error=EntryUnavailableError("order entry stopped before the intent was recorded")
            )
            count += 1
        return count

    def snapshot(self) -> dict[str, Any]:
        stats = attrs.asdict(self.stats)
        stats["waiting"] = len(self._inflight)
        stats["batch_mean"] = (
            round(self.stats.batched_total / self.stats.commits, 2) if self.stats.commits else None
        )
        return stats
