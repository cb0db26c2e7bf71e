"""One batch of the intake: submit in stream order, judge, settle; hold the transient ones.

:class:`BatchSubmitter` takes the entries of one read (new, re-read from
this consumer's pending list, or claimed) and settles every one of them —
or, for the ones order entry refused for now (503), holds them and submits
them again after the refusal's hint (at most :data:`MAX_RETRY_DELAY_S`),
their idle time reset so no claim sweep takes them meanwhile. The rules are
:mod:`daemon.intake.service`'s module docstring (the ack boundary,
refusals, ``max_deliveries``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from daemon.config import IntakeConfig
from daemon.intake.entries import (
    Outcome,
    PoisonEntry,
    StreamEntry,
    Verdict,
    dead_letter_fields,
    decode_intent,
    judge,
)
from daemon.intake.report import IntakeStats
from daemon.orders.gateway import OrderGateway, UnknownOrderError
from daemon.orders.intent import OrderIntent
from daemon.supervise import ChildContext

if TYPE_CHECKING:
    from daemon.intake.redis_stream import RedisStreamLog

__all__ = ["MAX_RETRY_DELAY_S", "BatchSubmitter"]

log = logging.getLogger("tradingd.intake")

#: Transient refusals are submitted again after at most this long.
MAX_RETRY_DELAY_S = 5.0


class BatchSubmitter:
    """Settles batches of entries through order entry (see the module docstring).

    Args:
        settings: ``[intake]``.
        gateway: Order entry.
        consumer: This consumer's name (dead letters say who gave up).
        id_prefix: ``[orders] id_prefix`` (an over-delivered entry's client order id).
        stats: The intake's counters.
        wall_clock: Epoch seconds (dead letters' ``dead_at_ms``).
    """

    def __init__(
        self,
        settings: IntakeConfig,
        gateway: OrderGateway,
        *,
        consumer: str,
        id_prefix: str,
        stats: IntakeStats,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.consumer = consumer
        self.id_prefix = id_prefix
        self.stats = stats
        self.wall_clock = wall_clock
        #: Entries held for a retry now, and since when (``trio.current_time``).
        self.held = 0
        self.held_since: float | None = None

    async def process(
        self, ctx: ChildContext, stream: RedisStreamLog, entries: list[StreamEntry]
    ) -> None:
        """Submit ``entries``, settle what is decided; hold and resubmit the transient ones."""
        todo = entries
        while todo:
            outcomes = await self._submit_all(todo)
            acks: list[bytes] = []
            dead: list[list[bytes]] = []
            retry: list[tuple[StreamEntry, Outcome]] = []
            at_ms = int(self.wall_clock() * 1000)
            for entry, outcome in zip(todo, outcomes, strict=True):
                if outcome.verdict is Verdict.ACK:
                    acks.append(entry.entry_id)
                elif outcome.verdict is Verdict.DEAD:
                    dead.append(self._dead_letter(entry, outcome, at_ms))
                    acks.append(entry.entry_id)
                else:
                    retry.append((entry, outcome))
            await stream.settle(acks, dead)
            self._count(outcomes)
            if not retry:
                self._release()
                return
            todo = [entry for entry, _ in retry]
            self._hold(len(todo), retry[0][1].error)
            delay = min(MAX_RETRY_DELAY_S, max(outcome.retry_after_s for _, outcome in retry))
            ctx.heartbeat()
            with trio.move_on_after(delay):
                await ctx.wait_stop_requested()
            if ctx.stop_requested:
                return  # they stay pending: the next start re-reads them
            await stream.touch([entry.entry_id for entry in todo])

    def _dead_letter(self, entry: StreamEntry, outcome: Outcome, at_ms: int) -> list[bytes]:
        log.warning(
            "intake: entry %s dead-lettered after %d deliveries: %s",
            entry.shown_id,
            entry.deliveries,
            outcome.error,
        )
        s = self.settings
        return dead_letter_fields(
            entry, outcome, stream=s.stream, group=s.group, consumer=self.consumer, at_ms=at_ms
        )

    def _count(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.verdict is Verdict.ACK:
                if outcome.created:
                    self.stats.created += 1
                else:
                    self.stats.duplicates += 1
            elif outcome.verdict is Verdict.DEAD:
                self.stats.dead_lettered += 1
            else:
                self.stats.retries += 1

    def _hold(self, count: int, error: str | None) -> None:
        if self.held_since is None:
            self.held_since = trio.current_time()
            log.warning("intake: %d entries held for a retry: %s", count, error)
        self.held = count

    def _release(self) -> None:
        if self.held_since is not None:
            log.info("intake: held entries processed")
        self.held = 0
        self.held_since = None

    async def _submit_all(self, entries: list[StreamEntry]) -> list[Outcome]:
        """One outcome per entry. Submitted concurrently, so that one group commit
        carries the batch, yet handed to order entry in stream order: each
        submission is started only once the previous one is queued."""
        outcomes: list[Outcome | None] = [None] * len(entries)
        async with trio.open_nursery() as nursery:
            for index, entry in enumerate(entries):
                await nursery.start(self._submit_one, entry, outcomes, index)
        assert all(outcome is not None for outcome in outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    async def _submit_one(
        self,
        entry: StreamEntry,
        outcomes: list[Outcome | None],
        index: int,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            request = decode_intent(entry)
        except PoisonEntry as exc:
            outcomes[index] = judge(exc)
            task_status.started()
            return
        if entry.deliveries > self.settings.max_deliveries:
            task_status.started()
            outcomes[index] = await self._over_delivered(entry, request)
            return
        # Order entry queues the intent before its first checkpoint, so the next
        # submission (started once this one yields) is queued after it.
        task_status.started()
        try:
            result: Any = await self.gateway.submit(request)
        except Exception as exc:
            result = exc
        outcome = judge(result)
        answer = outcome.answer
        if isinstance(result, Exception) and answer is not None and answer.get("status") == 500:
            log.error("intake: entry %s: unexpected error", entry.shown_id, exc_info=result)
        outcomes[index] = outcome

    async def _over_delivered(self, entry: StreamEntry, request: dict[str, Any]) -> Outcome:
        """Delivered too often: acknowledged if its intent is recorded, else dead-lettered."""
        error = (
            f"delivered {entry.deliveries} times (intake.max_deliveries = "
            f"{self.settings.max_deliveries}) without being processed"
        )
        try:
            intent = OrderIntent.from_request(request, id_prefix=self.id_prefix)
        except Exception as exc:  # hostile input: whatever the validation raises
            return judge(exc)
        try:
            record = await self.gateway.get(intent.client_order_id)
        except UnknownOrderError:
            return Outcome.dead(error, {"status": 400, "error": error})
        except Exception as exc:
            return judge(exc)
        return Outcome(Verdict.ACK, created=False, client_order_id=record.client_order_id)
