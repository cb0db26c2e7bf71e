"""The intake child: Redis stream entries in, order intents through order entry, acks out.

One loop, one consumer of the group (``[intake] group``), run by
:meth:`IntakeService.run` as a supervised child::

    connect, create the group (MKSTREAM; BUSYGROUP is fine)
    ► this consumer's pending entries first (XREADGROUP … 0), batch by batch
    ► new entries (XREADGROUP … BLOCK ≤ 1 s >), and every claim_interval_s
      the claim sweep (XAUTOCLAIM: entries idle > claim_idle_ms, i.e. of a
      consumer that died) and the pending count
    each batch: decode → OrdersService.submit (in stream order, one group
    commit) → one MULTI: XADD the dead letters, XACK the committed and the dead

**The ack boundary.** An entry is acknowledged only after order entry
answered that its intent is committed — created, or the same ``message_id``
recorded before. Whatever happens in between (a kill, a lost connection, a
cancelled call), the entry stays pending and is delivered again: to this
consumer at its next start or after the failure (its pending entries are
re-read first), or to another one by its claim sweep. The redelivered entry
maps to the same ``client_order_id``, and the store's unique key makes it a
duplicate, which is then acknowledged: one intent per ``message_id``.

**Refusals.** Poison (not an intake entry, not JSON, not an intent) and
permanent refusals of order entry (400, 409, 422, as ``POST /orders`` would
answer) are dead-lettered with the entry's id and fields, the error and the
delivery count (:mod:`daemon.intake.entries`). Transient ones (503: entry
queue full, store down, pipeline stopping or restarting) keep the entry held
in memory and pending in Redis; it is submitted again after the hint of the
answer (capped), its idle time reset so no sweep takes it meanwhile. An
entry delivered more than ``max_deliveries`` times is dead-lettered without
being submitted — unless its intent is recorded already, when it is simply
acknowledged.

**Redis down.** Logged, health degraded with the reason, and retried with
backoff (equal jitter, ``retry_initial_s`` → ``retry_max_s``); after
reconnecting, the pending entries are re-read first. Nothing from Redis can
crash the child: entries are hostile input, replies are checked, and every
Redis error is a :class:`~daemon.errors.TransientError` or
:class:`~daemon.errors.PermanentError` by the time it gets here.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from daemon.config import IntakeConfig
from daemon.errors import TradingdError, TransientError
from daemon.health import HealthLevel
from daemon.intake.batch import BatchSubmitter
from daemon.intake.report import IntakeStats, intake_metrics, intake_status
from daemon.metrics import MetricFamily
from daemon.orders.gateway import OrderGateway
from daemon.resilience import ThreadLane
from daemon.supervise import ChildContext

if TYPE_CHECKING:
    from daemon.intake.redis_stream import RedisStreamLog

__all__ = ["IntakeService", "default_consumer"]

log = logging.getLogger("tradingd.intake")

#: Held entries for longer than this make health degraded.
HELD_WARN_S = 30.0


def default_consumer() -> str:
    """``<hostname>-<pid>``: unique per process on a host."""
    return f"{socket.gethostname()}-{os.getpid()}"


class IntakeService:
    """The Redis stream intake of one daemon (see the module docstring).

    Args:
        settings: ``[intake]``.
        gateway: Order entry (the daemon's :class:`~daemon.orders.service.OrdersService`).
        id_prefix: ``[orders] id_prefix`` (the client order id of an entry's intent).
        wall_clock: Epoch seconds (dead letters' ``dead_at_ms``).
    """

    def __init__(
        self,
        settings: IntakeConfig,
        gateway: OrderGateway,
        *,
        id_prefix: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.id_prefix = id_prefix
        self.wall_clock = wall_clock
        self.consumer = settings.consumer or default_consumer()
        self.lane = ThreadLane("intake", max_threads=1)
        self.stats = IntakeStats()
        self.connected = False
        self.running = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.pending_total: int | None = None
        self.pending_mine: int | None = None
        self.batches = BatchSubmitter(
            settings,
            gateway,
            consumer=self.consumer,
            id_prefix=id_prefix,
            stats=self.stats,
            wall_clock=wall_clock,
        )

    # ------------------------------------------------------------------ child

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Report started at once (Redis may be down: health says so), then consume."""
        # Imported here: redis-py is loaded only by a daemon whose intake is enabled.
        from daemon.intake.redis_stream import RedisStreamLog  # noqa: PLC0415

        stream = RedisStreamLog(self.settings, self.consumer, self.lane)
        self.running = True
        task_status.started()
        try:
            await self._consume(ctx, stream)
        finally:
            self.running = False
            self.connected = False
            self.batches.held = 0
            self.batches.held_since = None
            with trio.CancelScope(shield=True), trio.move_on_after(self._call_bound_s()):
                await stream.aclose()

    def _call_bound_s(self) -> float:
        s = self.settings
        return s.block_ms / 1000 + 2 * s.socket_timeout_s

    async def _consume(self, ctx: ChildContext, stream: RedisStreamLog) -> None:
        failures = 0
        recover = True  # at start: this consumer's pending entries first
        next_sweep = trio.current_time()
        while not ctx.stop_requested:
            ctx.heartbeat()
            try:
                if not self.connected:
                    await stream.open()
                    self._on_connected(stream)
                if recover:
                    await self._recover(ctx, stream)
                    recover = False
                if trio.current_time() >= next_sweep:
                    await self._sweep(ctx, stream)
                    next_sweep = trio.current_time() + self.settings.claim_interval_s
                entries = await stream.read(b">")
                self.stats.read += len(entries)
                await self.batches.process(ctx, stream, entries)
                failures = 0
            except TradingdError as exc:
                # Redis unreachable or refusing (translated at its edge), or the
                # password's secret unreadable: retried; entries stay pending.
                failures += 1
                self._on_error(exc, failures)
                recover = True
                delay = self._backoff_s(failures)
                with trio.move_on_after(delay):
                    await ctx.wait_stop_requested()

    def _on_connected(self, stream: RedisStreamLog) -> None:
        self.connected = True
        self.stats.connects += 1
        log.info(
            "intake: connected to %s; stream %s, group %s, consumer %s",
            stream.shown_url,
            self.settings.stream,
            self.settings.group,
            self.consumer,
        )

    def _on_error(self, exc: TradingdError, failures: int) -> None:
        was_connected = self.connected
        self.connected = False
        self.stats.redis_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = self.wall_clock()
        level = logging.WARNING if isinstance(exc, TransientError) else logging.ERROR
        if was_connected or failures == 1 or failures % 10 == 0:
            log.log(level, "intake: %s (attempt %d; retrying)", self.last_error, failures)

    def _backoff_s(self, failures: int) -> float:
        s = self.settings
        cap = min(s.retry_max_s, s.retry_initial_s * 2.0 ** min(failures - 1, 30))
        return cap / 2 + random.uniform(0, cap / 2)

    async def _recover(self, ctx: ChildContext, stream: RedisStreamLog) -> None:
        """This consumer's pending entries, oldest first, batch by batch."""
        cursor = b"0"
        while not ctx.stop_requested:
            ctx.heartbeat()
            entries = await stream.read(cursor)
            if not entries:
                return
            self.stats.recovered += len(entries)
            await self.batches.process(ctx, stream, entries)
            cursor = entries[-1].entry_id

    async def _sweep(self, ctx: ChildContext, stream: RedisStreamLog) -> None:
        """Take over entries idle longer than ``claim_idle_ms``; count what is pending."""
        cursor = b"0-0"
        while not ctx.stop_requested:
            ctx.heartbeat()
            cursor, entries, deleted = await stream.autoclaim(cursor)
            self.stats.claim_deleted += deleted
            if entries:
                self.stats.claimed += len(entries)
                log.info(
                    "intake: claimed %d entries idle > %d ms (from consumers gone quiet)",
                    len(entries),
                    self.settings.claim_idle_ms,
                )
                await self.batches.process(ctx, stream, entries)
            if cursor == b"0-0":
                break
        self.pending_total, self.pending_mine = await stream.pending()

    # ------------------------------------------------------------------ status

    def check(self) -> tuple[HealthLevel, str | None]:
        """Degraded while Redis is unreachable, or entries wait for order entry too long."""
        if not self.running:
            return HealthLevel.DEGRADED, "intake: not running"
        if not self.connected:
            reason = self.last_error or "connecting"
            return HealthLevel.DEGRADED, f"intake: redis not connected ({reason})"
        held_since = self.batches.held_since
        if held_since is not None and trio.current_time() - held_since > HELD_WARN_S:
            return HealthLevel.DEGRADED, (
                f"intake: {self.batches.held} entries waiting for order entry for more than "
                f"{HELD_WARN_S:g}s"
            )
        return HealthLevel.HEALTHY, None

    def status(self) -> dict[str, Any]:
        """The intake's part of ``/status/full`` (:func:`daemon.intake.report.intake_status`)."""
        return intake_status(self)

    def metrics(self) -> list[MetricFamily]:
        """``tradingd_intake_*`` (:func:`daemon.intake.report.intake_metrics`)."""
        return intake_metrics(self)
