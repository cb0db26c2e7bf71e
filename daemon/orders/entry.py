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

Here: :class:`Entry`, the submit path and the writer task that collects the
batches. Steps 1-4 of one batch are :class:`~daemon.orders.entry_commit.EntryCommitter`'s
(:mod:`daemon.orders.entry_commit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import trio

from daemon.config import OrdersConfig
from daemon.errors import TradingdError
from daemon.orders.dispatch import Dispatcher
from daemon.orders.entry_commit import EntryCommitter, EntryStats, Pending, answer_again
from daemon.orders.executor import SendSignals
from daemon.orders.gateway import EntrySaturatedError, EntryUnavailableError, SubmitResult
from daemon.orders.intent import IntentProblem, IntentValidationError, OrderIntent, ProblemCode
from daemon.orders.ledger import OrderLedger, VenueAccess

__all__ = ["Entry", "EntryStats"]


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
        self.send_signals = send_signals if settings.answer_hold_ms > 0 else None
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.accounts = dict(accounts)
        self.settings = settings
        self.stats = EntryStats()
        self._send, self._receive = trio.open_memory_channel[Pending](settings.entry_queue_capacity)
        self._inflight: dict[str, Pending] = {}
        self._open = True
        self._flushed: list[trio.Event] = []
        self._committer = EntryCommitter(
            ledger,
            dispatcher,
            venues,
            self.accounts,
            stats=self.stats,
            inflight=self._inflight,
            reference_price=reference_price,
            executor_ready=executor_ready,
            stranded=stranded if stranded is not None else set(),
            send_signals=self.send_signals,
            wall_clock=wall_clock,
        )

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
            return answer_again(self.stats, live, intent)
        waiting = self._inflight.get(coid)
        if waiting is not None:
            await waiting.done.wait()
            if waiting.error is not None:
                raise waiting.error
            assert waiting.result is not None
            return answer_again(self.stats, waiting.result.record, intent)
        if not self._open:
            raise EntryUnavailableError("order entry is stopping: submit again after the restart")
        pending = Pending(intent)
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
                retry_after_s=self._committer.retry_after(),
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
                await self._committer.write_batch(batch)
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

    def fail_queued(self) -> int:
        """Answer every submission still queued with 503 (the pipeline is going away)."""
        count = 0
        while True:
            try:
                pending = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self._committer.settle(pending)
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
