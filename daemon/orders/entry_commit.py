"""One group commit of order entry: risk, one store write, answers, hand-over.

:class:`EntryCommitter` takes one batch of submissions that the writer task of
:class:`~daemon.orders.entry.Entry` collected and finishes every one of them
(steps 1-4 of the path drawn in :mod:`daemon.orders.entry`):

1. pre-trade risk for each intent (a pass holds a reservation);
2. the refused ones only are looked up in the store (a recorded intent
   answers 200 or 409, even if risk would refuse it now);
3. one transaction records every passed intent, the fast-path ones
   (their account's queue idle, sending ready) as SENDING;
4. reservations committed, 202 answered, each intent handed to its
   account's queue — or, on a failed write, reservations rolled back and
   503 answered, naming the cause (:func:`refusal`: "disk full", "store
   unavailable", …) with a ``Retry-After``. The batch is one transaction,
   so a failed write records none of it: no half-written intent, and no
   202 for an intent that is not durable.

Also here: :class:`Pending` (one submission waiting for the writer),
:class:`EntryStats` and :func:`answer_again` (the answer to an intent that is
already recorded), shared by the submit path and the batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

import attrs
import trio

from daemon.errors import (
    RiskRejectedError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from daemon.orders.dispatch import Dispatcher, WorkItem
from daemon.orders.executor import SendSignals
from daemon.orders.gateway import EntryUnavailableError, IntentConflictError, SubmitResult
from daemon.orders.intent import OrderIntent
from daemon.orders.ledger import OrderLedger, VenueAccess
from daemon.orders.records import IntentRecord
from daemon.risk.checks import RiskRequest
from daemon.risk.reservation import Reservation

__all__ = [
    "STORE_DOWN_RETRY_AFTER_S",
    "EntryCommitter",
    "EntryStats",
    "Pending",
    "answer_again",
    "refusal",
]

# Order entry's logger: these lines were Entry's own before the batch was split out.
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


class Pending:
    """One submission waiting for the writer."""

    __slots__ = ("done", "error", "intent", "on_wire", "received", "reserved_account", "result")

    def __init__(self, intent: OrderIntent) -> None:
        self.intent = intent
        self.done = trio.Event()
        #: Set once the request is written (fast path only; see :mod:`daemon.orders.entry`).
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


def answer_again(stats: EntryStats, record: IntentRecord, intent: OrderIntent) -> SubmitResult:
    """The answer to ``intent`` when ``record`` holds its id already: 200, or 409 if it differs."""
    differing = record.to_intent().differing_fields(intent)
    if differing:
        stats.conflicts += 1
        raise IntentConflictError(record.client_order_id, differing)
    stats.duplicates += 1
    return SubmitResult(record, created=False)


class EntryCommitter:
    """Commits the batches of one :class:`~daemon.orders.entry.Entry` and answers them.

    Args:
        ledger: Live orders (memory) and the store behind them.
        dispatcher: Per-account work queues (the slots are reserved by submit).
        venues: Venue reference data (``exchangeInfo`` for risk).
        accounts: Account name → venue name.
        stats: The entry's counters (shared with the submit path).
        inflight: Client order id → submission not answered yet (shared with
            the submit path, which adds to it).
        reference_price: ``(venue, symbol) -> Decimal | None`` for risk.
        executor_ready: ``account -> bool``: the fast path is taken only then.
        stranded: Where fast-path intents go whose work item cannot be queued.
        send_signals: Where a fast-path intent asks to hear that it is written.
        wall_clock: Epoch seconds (the rows' timestamps).
    """

    def __init__(
        self,
        ledger: OrderLedger,
        dispatcher: Dispatcher,
        venues: VenueAccess,
        accounts: Mapping[str, str],
        *,
        stats: EntryStats,
        inflight: dict[str, Pending],
        reference_price: Callable[[str, str], Decimal | None] | None,
        executor_ready: Callable[[str], bool],
        stranded: set[str],
        send_signals: SendSignals | None,
        wall_clock: Callable[[], float],
    ) -> None:
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.venues = venues
        self.accounts = accounts
        self.stats = stats
        self._inflight = inflight
        self.reference_price = reference_price
        self.executor_ready = executor_ready
        self.stranded = stranded
        self.send_signals = send_signals
        self.wall_clock = wall_clock
        self._batch_sizes: list[int] = []

    def retry_after(self) -> float:
        """Roughly how long the writer needs for what is queued (1-5 s)."""
        sizes = self._batch_sizes[-8:]
        per_batch = max(1, max(sizes, default=1))
        return float(max(1, min(5, math.ceil(len(self._inflight) / per_batch / 100))))

    async def write_batch(self, batch: list[Pending]) -> None:
        """Finish every submission of ``batch`` (see the module docstring)."""
        self.stats.batch_max = max(self.stats.batch_max, len(batch))
        self.stats.batched_total += len(batch)
        self._batch_sizes.append(len(batch))
        del self._batch_sizes[:-64]
        fresh: list[tuple[Pending, Reservation]] = []
        refused: list[tuple[Pending, BaseException]] = []
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
                self.settle(pending)
                try:
                    pending.finish(answer_again(self.stats, existing[coid], pending.intent))
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

    async def _answer_refused(self, refused: list[tuple[Pending, BaseException]]) -> None:
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
            self.settle(pending)
            record = stored.get(pending.intent.client_order_id)
            if record is None:
                pending.finish(error=error)
                continue
            try:
                pending.finish(answer_again(self.stats, record, pending.intent))
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

    def settle(self, pending: Pending) -> None:
        """Give back what an intent that will not be recorded held."""
        self._inflight.pop(pending.intent.client_order_id, None)
        if pending.reserved_account is not None:
            self.dispatcher.release(pending.reserved_account)
            pending.reserved_account = None

    def _fail(self, batch: Sequence[Pending], exc: BaseException) -> None:
        """Answer ``batch`` with 503: the store could not record it (``exc``)."""
        self.stats.commit_failures += 1
        log.error("order entry: commit of %d intents failed: %s", len(batch), exc)
        message, retry_after_s = refusal(exc)
        for pending in batch:
            self.settle(pending)
            pending.finish(error=EntryUnavailableError(message, retry_after_s=retry_after_s))


#: ``Retry-After`` of a refusal while the disk is full or the store read-only: an
#: operator has to act, so retrying every second only adds failed writes.
STORE_DOWN_RETRY_AFTER_S = 5.0


def refusal(exc: BaseException) -> tuple[str, float]:
    """The 503's text and ``Retry-After`` when the store could not record a batch.

    The text names the cause first ("disk full", "store unavailable"), then
    the store's own message (which names the file), and says that nothing was
    recorded: a client may submit the same ``message_id`` again without fear
    of a second order. A failure that is not the store's says only its type.
    """
    if isinstance(exc, StoreFullError | StoreReadOnlyError):
        cause = "disk full" if isinstance(exc, StoreFullError) else "store read-only"
        retry_after_s = STORE_DOWN_RETRY_AFTER_S
    elif isinstance(exc, StoreUnavailableError):
        cause, retry_after_s = "store unavailable", 1.0
    elif isinstance(exc, StoreError):
        cause, retry_after_s = "store error", 1.0
    else:
        return (
            f"the store could not record the intent ({type(exc).__name__}); "
            "nothing was recorded: submit again",
            1.0,
        )
    return (
        f"{cause}: the store cannot record new intents now ({exc}); nothing was recorded: "
        "submit again (the same message_id) later",
        retry_after_s,
    )
