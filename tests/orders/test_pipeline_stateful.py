"""Stateful test: the real order pipeline against a model venue, with faults and crashes.

A hypothesis ``RuleBasedStateMachine`` drives the real
:class:`~daemon.orders.service.OrdersService` (entry, dispatcher, executor,
ledger, reconciler, store) over a real SQLite file and a
:class:`~tests.helpers.model_venue.ModelVenue`. Its rules submit intents
(new and repeated message ids, concurrently), arm venue faults (reject, 5xx
before and after processing, timeout after processing, slow and lagging
orders, failing and slow queries and cancels), rate limits of new orders (our
own limiter refusing a request unsent; the venue's 429/418, rejected before
processing and blocking the caller for its ``Retry-After``) and store faults
(a slow disk), fill and cancel resting orders at the venue, ask the pipeline
to cancel (a PENDING intent — held back by a rate limit, say — is canceled
locally, a later one gets a cancel request), let
virtual time pass, stop gracefully, and **kill the process** —
between any two steps, or at a chosen venue call or store transaction
(inside send→persist included) — then start a new incarnation over the same
file, which runs start-up reconciliation.

Faults come with the step that makes the call they hit (a submission, a
cancel, a fill whose trades must be fetched) or on their own for queries and
the store; at most a few wait unconsumed per call.

Invariants, after every step:

* the venue never holds two orders with one client order id (its audit);
* every intent acknowledged to a caller is in the store, as submitted;
* every venue order belongs to a recorded intent (none is sent before it is durable);
* every state history starts at PENDING and follows :data:`TRANSITIONS`; a
  SENDING → PENDING step carries a proof of non-execution (a rate limit);
* no process sends a new order before the ``Retry-After`` of a 429/418 it got;
* an intent canceled before sending (PENDING → CANCELED) has no venue order;
* no unexpected error: no exception logged by the pipeline, no contradiction
  between venue reports and records, no incarnation dying of anything but a kill;
* no fill stored twice or unlike the venue's trade: the stored position is the
  signed sum of the stored fills, and an intent's executed quantity is at most
  the venue's and at most what its stored fills add up to;
* no new order reaches the venue while an open order holds its client id (a
  resend after a false proof of absence), and no order the user data stream
  reported while its record was SENDING or UNKNOWN is ever resent.

:class:`StreamPipelineMachine` runs the same rules and checks with the venue's
user data stream on (:mod:`tests.helpers.model_userstream`: every order change
pushed as an ``executionReport``), plus a rule that faults the stream (drop,
terminate, stall, a refused subscription), so that pushed events, polling
while the stream is down, the tracker's queries and the reconciliation after
every subscription overlap on the same orders.

At the end, with faults off and time past the visibility grace, every intent
is ACCEPTED, PARTIALLY_FILLED or terminal (REJECTED, or CANCELED before
sending, only if it never reached the venue): a rate-limited one was sent
again, once. The store agrees with the venue on every order — state, venue id,
executed quantity, fills (by trade id) and position — and the live process
agrees with the store: its live orders, its risk book's open orders and
position, no open venue order reported as unknown.

How it runs: the machine is synchronous, the pipeline is not. One Trio run
per example lives in a thread of its own under a
:class:`~trio.testing.MockClock`; each rule is one call into it
(``trio.from_thread.run``) during which the clock autojumps, and which ends
when every task is blocked again. Between rules the clock stands still, so
nothing happens that a rule did not cause. The store uses
:func:`~daemon.store.base.inline_runner`-style calls (no thread lane under
the virtual clock), so a transaction is all or nothing at every kill, as
SQLite guarantees for a real one. Importing hypothesis makes Trio's
scheduling deterministic, so failures replay and shrink.

The tests after the machines replay fixed step sequences for races they found
or can only reach by luck, and the stream as a second witness with a venue
that lags beyond ``query_lag_s`` (see their docstrings). Four of them replay
bugs the model found in the pipeline (now fixed), as regression tests.

A kill is a ``kill -9``: the incarnation is marked dead, every venue call
and store transaction it makes from then on raises
:class:`~tests.helpers.model_venue.ProcessKilledError` (a ``BaseException``
that nothing in the pipeline may catch), every call in flight is cut, and
its tasks are cancelled. Requests already on the wire still reach the venue.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import traceback
from collections.abc import Awaitable, Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Final, TypeVar, cast

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from daemon.config import OrdersConfig
from daemon.errors import RiskRejectedError, VenueRateLimitedError
from daemon.model.instruments import ExchangeInfo, SymbolFilters, SymbolInfo
from daemon.model.orders import FillReport, NewOrder, OrderReport, Side
from daemon.model.userstream import ExecutionReport, UserStreamEvent
from daemon.orders.dispatch import DispatchMode
from daemon.orders.gateway import (
    EntrySaturatedError,
    EntryUnavailableError,
    UnknownOrderError,
)
from daemon.orders.ids import derive_client_order_id
from daemon.orders.ledger import OrderVenue
from daemon.orders.records import HistoryRow, IntentRecord
from daemon.orders.service import OrdersService, Pipeline
from daemon.orders.state import (
    NOT_EXECUTED_CAUSES,
    TERMINAL_STATES,
    TRANSITIONS,
    OrderState,
    from_order_report,
)
from daemon.orders.userstream import UserStreams, UserStreamSource
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.store.orders_fills import fills_for, positions
from daemon.store.orders_queries import history, list_intents
from daemon.store.sqlite import SqliteStore
from daemon.supervise import ChildContext
from tests.helpers.model_userstream import StreamFault, StreamFaultKind
from tests.helpers.model_venue import (
    EPOCH_MS,
    Call,
    Fault,
    FaultKind,
    ModelVenue,
    ProcessKilledError,
    VenueOrder,
)

T = TypeVar("T")
S = OrderState

VENUE: Final = "model"
ACCOUNT: Final = "main"
SYMBOL: Final = "BTCUSDT"
RECV_WINDOW_MS: Final = 5000

SETTINGS: Final = OrdersConfig(
    shards=2,
    idle_queue_s=3.0,
    send_timeout_s=2.0,
    section_deadline_s=4.0,
    drain_timeout_s=2.0,
    clock_skew_s=0.5,
    query_lag_s=1.0,
    unknown_retry_s=0.5,
    poll_interval_s=0.5,
    reconcile_interval_s=5.0,
    reconcile_concurrency=2,
    startup_reconcile_timeout_s=5.0,
)
#: After this long, a venue's "no such order" proves absence (10.5 s here).
GRACE_S: Final = SETTINGS.visibility_grace_s(RECV_WINDOW_MS)

EXCHANGE_INFO: Final = ExchangeInfo(
    venue=VENUE,
    timezone="UTC",
    server_time_ms=EPOCH_MS,
    rate_limits=(),
    symbols={
        SYMBOL: SymbolInfo(
            symbol=SYMBOL,
            status="TRADING",
            base_asset="BTC",
            quote_asset="USDT",
            filters=SymbolFilters(
                tick_size=Decimal("0.01"),
                step_size=Decimal("0.001"),
                min_qty=Decimal("0.001"),
            ),
        )
    },
)
LIMITS: Final = LimitTable(default=RiskLimits(max_orders_per_window=None, max_open_orders=None))

#: A rule gives up (and fails) after this much virtual time: a hang is a bug.
COMMAND_LIMIT_S: Final = 300.0
#: With faults off, everything must be resolved within this much virtual time.
FINAL_LIMIT_S: Final = 120.0
#: Time always let pass at the end: past the grace and a periodic full pass.
FINAL_MIN_S: Final = GRACE_S + SETTINGS.reconcile_interval_s + 1.0
#: The account's other activity on the user data stream: an event this often.
ACTIVITY_S: Final = 2.5
#: Faults armed and not consumed yet, at most, per venue call.
MAX_ARMED: Final = 4

#: A tmpfs keeps the FULL-synchronous commits cheap.
_TMP_ROOT: Final = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def wall_clock() -> float:
    """The pipeline's wall clock: virtual time on the venue's epoch."""
    return EPOCH_MS / 1000 + trio.current_time()


def make_request(message_id: str, kind: str, side: str) -> dict[str, str]:
    request = {
        "message_id": message_id,
        "account": ACCOUNT,
        "symbol": SYMBOL,
        "side": side,
        "type": kind,
        "quantity": "0.010",
    }
    if kind == "LIMIT":
        request |= {"price": "29000.00", "time_in_force": "GTC"}
    return request


# ----------------------------------------------------------------------------- one process


class _Context:
    """The part of :class:`~daemon.supervise.ChildContext` that ``OrdersService.run`` uses."""

    def __init__(self) -> None:
        self.stop = trio.Event()

    async def wait_stop_requested(self) -> None:
        await self.stop.wait()


class _Service(OrdersService):
    """The real service; remembers its pipeline after ``run`` clears it (for the counters)."""

    seen: Pipeline | None = None
    _current: Pipeline | None = None

    @property
    def pipeline(self) -> Pipeline | None:
        return self._current

    @pipeline.setter
    def pipeline(self, value: Pipeline | None) -> None:
        self._current = value
        if value is not None:
            self.seen = value


class Incarnation:
    """One process of the daemon: its service, its store connection, and its death.

    Args:
        number: 1 for the first start, +1 for every restart.
        world: Where the venue, the store file and the kill switches are.
    """

    def __init__(self, number: int, world: World) -> None:
        self.number = number
        self.world = world
        self.dead = False
        self.closing = False
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.ctx = _Context()
        self.store: SqliteStore | None = None
        #: Its failures were reported already.
        self.reported = False
        self._calls: set[trio.CancelScope] = set()
        self.client = _ProcessClient(world.venue, self)

        async def open_store() -> SqliteStore:
            store = await SqliteStore.open(
                world.path, runner=self.store_call, wall_clock=wall_clock
            )
            self.store = store
            return store

        self.service = _Service(
            attrs.evolve(SETTINGS, dispatch=world.mode),
            {ACCOUNT: VENUE},
            LIMITS,
            _ProcessVenues(self.client, stream=world.stream),
            open_store,
            wall_clock=wall_clock,
        )

    def kill(self) -> None:
        """``kill -9``: nothing this process does from now on has an effect."""
        if self.dead:
            return
        self.dead = True
        for scope in list(self._calls):
            scope.cancel()
        self.scope.cancel()

    def check_alive(self) -> None:
        if self.dead and not self.closing:
            raise ProcessKilledError(f"process {self.number} is dead")

    def deliver(self, event: UserStreamEvent) -> None:
        """A user data stream event reaches this process (a dead one gets nothing)."""
        if self.dead:
            raise ProcessKilledError(f"process {self.number} is dead")
        if isinstance(event, ExecutionReport):
            self.world.note_reported(self, event.report.client_order_id)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one call of this process; it is cut (ProcessKilledError) if the process dies."""
        self.check_alive()
        box: list[T] = []
        with trio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                box.append(await fn())
            finally:
                self._calls.discard(scope)
        if self.dead or not box:
            raise ProcessKilledError(f"process {self.number} died during the call")
        return box[0]

    async def store_call(self, fn: Callable[[], T], /) -> T:
        """The store's runner: inline (no thread under the virtual clock), and mortal.

        One call is one whole transaction, so a kill before it leaves nothing
        and a kill after it leaves it committed — what SQLite guarantees. A
        stall is a slow disk: the caller may give up (be cancelled) while it
        waits, and then the transaction never ran.
        """
        await trio.lowlevel.checkpoint()
        self.check_alive()
        fault = None if self.closing else self.world.take_store_fault()
        if fault is not None and fault.stall_s:
            await trio.sleep(fault.stall_s)
            self.check_alive()
        if fault is not None and fault.kill == "before":
            self.world.kill_current()
            raise ProcessKilledError(f"process {self.number} killed before a store transaction")
        result = fn()
        if fault is not None and fault.kill == "after":
            self.world.kill_current()
            raise ProcessKilledError(f"process {self.number} killed after a store commit")
        return result


class _ProcessClient:
    """The venue as one process sees it: calls die with the process."""

    def __init__(self, venue: ModelVenue, process: Incarnation) -> None:
        self.venue = venue
        self.process = process

    async def new_order(
        self, order: NewOrder, *, on_sent: Callable[[], None] | None = None
    ) -> OrderReport:
        self.process.check_alive()
        limited = self.process.world.rate_limit(self.process)
        if limited is not None:
            await trio.lowlevel.checkpoint()
            raise limited  # not processed: the venue holds nothing new
        return await self.process.call(lambda: self.venue.new_order(order, on_sent=on_sent))

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        return await self.process.call(
            lambda: self.venue.get_order(symbol, client_order_id=client_order_id, order_id=order_id)
        )

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        return await self.process.call(
            lambda: self.venue.cancel_order(
                symbol, client_order_id=client_order_id, order_id=order_id
            )
        )

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        return await self.process.call(lambda: self.venue.open_orders(symbol))

    async def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        limit: int = 500,
    ) -> list[FillReport]:
        return await self.process.call(
            lambda: self.venue.my_trades(symbol, order_id=order_id, from_id=from_id, limit=limit)
        )


class _ProcessVenues:
    """:class:`~daemon.orders.ledger.VenueAccess` of one process: the model venue, always up.

    With ``stream``, also its user data stream
    (:class:`~daemon.orders.userstream.UserStreamAccess`): sessions that deliver
    to this process only, and nothing once it is dead.
    """

    def __init__(self, client: _ProcessClient, *, stream: bool = False) -> None:
        self._client = client
        self._stream = stream

    def user_stream_enabled(self, venue: str) -> bool:
        assert venue == VENUE, venue
        return self._stream

    def user_stream(self, venue: str) -> UserStreamSource | None:
        assert venue == VENUE, venue
        process = self._client.process
        return self._client.venue.user_stream(
            wall_clock_ms=lambda: int(wall_clock() * 1000), before_delivery=process.deliver
        )

    def client(self, venue: str) -> OrderVenue | None:
        assert venue == VENUE, venue
        return self._client

    async def wait_client(self, venue: str) -> OrderVenue:
        assert venue == VENUE, venue
        await trio.lowlevel.checkpoint()
        return self._client

    def exchange_info(self, venue: str) -> ExchangeInfo | None:
        return EXCHANGE_INFO if venue == VENUE else None

    def recv_window_ms(self, venue: str) -> int:
        return RECV_WINDOW_MS


def _only_kills(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_kills(e) for e in exc.exceptions)
    return isinstance(exc, ProcessKilledError | trio.Cancelled)


# ----------------------------------------------------------------------------- the world


class _ErrorLog(logging.Handler):
    """Collects the pipeline's logged exceptions: each one is a bug here."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None:
            text = record.getMessage()
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.records.append(text)


class World:
    """Everything on the Trio side: the venue, the store file, the live process, the caller."""

    def __init__(self, path: Path, errors: list[str], *, stream: bool = False) -> None:
        self.path = path
        self.errors = errors
        #: Whether the processes consume the venue's user data stream.
        self.stream = stream
        #: Client ids the stream reported while their record was SENDING or UNKNOWN →
        #: the send attempt it was in (none of its later resolutions may be a resend).
        self.stream_reported: dict[str, int] = {}
        self.clock = trio.testing.MockClock()
        self.venue = ModelVenue(VENUE, recv_window_ms=RECV_WINDOW_MS, kill_hook=self.kill_current)
        self.mode = DispatchMode.SHARDED
        self.current: Incarnation | None = None
        self.incarnations = 0
        self.kills = 0
        self.failures: list[str] = []
        #: What each message id was first submitted as (a repeat is a retry of it).
        self.requests: dict[str, dict[str, str]] = {}
        #: Intents acknowledged to the caller: client order id → request.
        self.acked: dict[str, dict[str, str]] = {}
        #: The armed store fault and how many store calls it still lets pass.
        self.store_fault: StoreFault | None = None
        #: Rate limits armed for the next new-order calls.
        self.rate_limits: list[RateLimit] = []
        #: The venue refuses new orders (429) until then (trio time), after a 429/418 it
        #: gave to process ``blocked_by``.
        self.blocked_until = -math.inf
        self.blocked_by: int | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()

    # ------------------------------------------------------------------ trio side

    async def main(self, ready: threading.Event) -> None:
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.venue.serve)
            if self.stream:
                await nursery.start(self.venue.stream.activity, ACTIVITY_S)
            ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def command(self, fn: Callable[[], Awaitable[None]], settle: bool = True) -> None:
        """One rule: time runs while it does; it ends when every task is blocked."""
        self.clock.autojump_threshold = 0
        try:
            with trio.fail_after(COMMAND_LIMIT_S):
                await fn()
                if settle:
                    await self._settle()
        finally:
            self.clock.autojump_threshold = math.inf
        if self.current is not None:
            self._collect(self.current)
        self._raise_failures()

    async def shutdown(self) -> None:
        self.clock.autojump_threshold = 0
        inc = self.current
        if inc is not None:
            inc.kill()
            with trio.move_on_after(COMMAND_LIMIT_S):
                await inc.finished.wait()
        self._stop.set()

    def _raise_failures(self) -> None:
        failures = self.failures + self.errors
        if failures:
            raise AssertionError("the pipeline failed:\n" + "\n".join(failures))

    async def _settle(self) -> None:
        """Wait until nothing can run; restart the process if it died (as systemd would)."""
        while True:
            await trio.testing.wait_all_tasks_blocked()
            inc = self.current
            if inc is not None and not inc.dead and not inc.finished.is_set():
                return
            if inc is not None:
                await inc.finished.wait()
                self._collect(inc)
            self._start()

    def _start(self) -> None:
        assert self._nursery is not None
        self.incarnations += 1
        inc = Incarnation(self.incarnations, self)
        self.current = inc
        self._nursery.start_soon(self._run, inc)

    async def _run(self, inc: Incarnation) -> None:
        try:
            with inc.scope:
                await inc.service.run(cast(ChildContext, inc.ctx))
            if not inc.dead and not inc.ctx.stop.is_set():
                self.failures.append(f"process {inc.number}: the pipeline returned by itself")
        except trio.Cancelled:
            raise
        except BaseException as exc:
            if not (inc.dead and _only_kills(exc)):
                text = "".join(traceback.format_exception(exc))
                self.failures.append(f"process {inc.number} died of an error:\n{text}")
        finally:
            inc.closing = True
            if inc.store is not None:
                with trio.CancelScope(shield=True):
                    await inc.store.aclose()
            inc.finished.set()

    def _collect(self, inc: Incarnation) -> None:
        """Record what the process counted that must not happen (once per process)."""
        pipeline = inc.service.seen
        if pipeline is None or inc.reported:
            return
        if pipeline.ledger.contradictions:
            inc.reported = True
            self.failures.append(
                f"process {inc.number}: {pipeline.ledger.contradictions} venue report(s) "
                "contradicted the records"
            )

    def kill_current(self) -> None:
        inc = self.current
        if inc is not None and not inc.dead:
            self.kills += 1
            inc.kill()

    def rate_limit(self, process: Incarnation) -> VenueRateLimitedError | None:
        """The rate limit a new order of ``process`` meets now, if any.

        While the venue's ``Retry-After`` runs it answers 429 again; a process that
        was told so and sends anyway is a failure (the venue would ban it). An armed
        limit is our own limiter refusing the request unsent (``status`` None), or the
        venue's 429/418, which starts such a block.
        """
        now = trio.current_time()
        if now < self.blocked_until:
            if process.number == self.blocked_by:
                self.failures.append(
                    f"process {process.number} sent a new order {self.blocked_until - now:.3f}s "
                    "before the Retry-After it was given"
                )
            return _limited(429, self.blocked_until - now)
        if not self.rate_limits:
            return None
        limit = self.rate_limits.pop(0)
        if limit.status is not None:
            assert limit.retry_after_s is not None
            self.blocked_until = now + limit.retry_after_s
            self.blocked_by = process.number
        return _limited(limit.status, limit.retry_after_s)

    def note_reported(self, process: Incarnation, client_order_id: str) -> None:
        """The stream hands ``process`` an event of this order: if its record is still
        SENDING or UNKNOWN there, the venue has the order, and no later step may resend it."""
        pipeline = process.service.pipeline
        record = None if pipeline is None else pipeline.ledger.get(client_order_id)
        if record is not None and record.state in (S.SENDING, S.UNKNOWN):
            attempt = self.stream_reported.get(client_order_id, record.send_attempts)
            self.stream_reported[client_order_id] = min(attempt, record.send_attempts)

    def take_store_fault(self) -> StoreFault | None:
        """The store fault for this store call, if it is the one armed."""
        fault = self.store_fault
        if fault is None:
            return None
        if fault.after > 0:
            self.store_fault = attrs.evolve(fault, after=fault.after - 1)
            return None
        self.store_fault = attrs.evolve(fault, times=fault.times - 1) if fault.times > 1 else None
        return fault

    # ------------------------------------------------------------------ rules

    async def start(self, mode: DispatchMode) -> None:
        self.mode = mode
        self._start()

    async def submit(
        self, batch: list[tuple[int | None, str, str]], fault: Fault | RateLimit | None
    ) -> None:
        """Submit concurrently: a new message (``None``), or the same one again (a retry).

        A retry sends exactly what was sent the first time, whatever was drawn.
        ``fault`` (or rate limit) is armed for the next new-order call.
        """
        inc = self.current
        assert inc is not None
        if isinstance(fault, RateLimit):
            await self.arm_rate_limit(fault, 1)
        elif fault is not None:
            await self.arm(Call.NEW_ORDER, fault, 1)
        async with trio.open_nursery() as nursery:
            for repeat, kind, side in batch:
                if repeat is None or not self.requests:
                    message_id = f"m{len(self.requests)}"
                    self.requests[message_id] = make_request(message_id, kind, side)
                else:
                    message_id = sorted(self.requests)[repeat % len(self.requests)]
                nursery.start_soon(self._submit_one, inc, self.requests[message_id])

    async def _submit_one(self, inc: Incarnation, request: dict[str, str]) -> None:
        try:
            result = await inc.call(lambda: inc.service.submit(request))
        except (ProcessKilledError, EntryUnavailableError, EntrySaturatedError):
            return  # no answer, or 503: the caller would submit again
        except RiskRejectedError as exc:
            raise AssertionError(f"risk rejected {request}: {exc}") from exc
        expected = derive_client_order_id(request["message_id"], ACCOUNT, SYMBOL)
        assert result.client_order_id == expected, (result.client_order_id, expected)
        self.acked[result.client_order_id] = request

    async def cancel(self, pick: int, fault: Fault | None) -> None:
        """The caller asks to cancel one of its acknowledged intents (in whatever state)."""
        inc = self.current
        assert inc is not None
        if fault is not None:
            await self.arm(Call.CANCEL_ORDER, fault, 1)
        coid = sorted(self.acked)[pick % len(self.acked)]
        try:
            await inc.call(lambda: inc.service.cancel(coid))
        except (ProcessKilledError, EntryUnavailableError):
            return
        except UnknownOrderError as exc:
            raise AssertionError(f"an acknowledged intent is unknown: {exc}") from exc

    async def venue_act(self, pick: int, action: str, fault: Fault | None) -> None:
        """The market fills a resting order (all of it or half), an operator cancels it,
        or the venue expires it.

        ``fault`` is armed for the next fills query.
        """
        orders = self.venue.open_order_list()
        if not orders:
            return
        if fault is not None:
            await self.arm(Call.MY_TRADES, fault, 1)
        order = orders[pick % len(orders)]
        if action == "cancel":
            self.venue.cancel_outside(order.order_id)
            return
        if action == "expire":
            self.venue.expire_outside(order.order_id)
            return
        left = order.quantity - order.executed
        half = (left / 2).quantize(Decimal("0.001"))
        self.venue.fill(order.order_id, half if action == "fill_part" and half > 0 else None)

    async def crash(self) -> None:
        self.kill_current()

    async def graceful_restart(self) -> None:
        inc = self.current
        assert inc is not None
        inc.ctx.stop.set()
        await inc.finished.wait()

    async def advance(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def arm(self, call: Call, fault: Fault, times: int) -> None:
        """Arm a venue fault, unless that call has plenty waiting already."""
        waiting = len(self.venue.armed().get(call, []))
        if waiting < MAX_ARMED:
            self.venue.arm(call, fault, times=min(times, MAX_ARMED - waiting))

    async def arm_stream(self, fault: StreamFault) -> None:
        """Arm a user data stream fault, unless a few wait already."""
        if self.venue.stream.armed() < MAX_ARMED:
            self.venue.stream.arm(fault)

    async def arm_store_fault(self, fault: StoreFault) -> None:
        self.store_fault = fault

    async def arm_rate_limit(self, limit: RateLimit, times: int) -> None:
        """Arm a rate limit for the next ``times`` new orders (a few at most waiting)."""
        self.rate_limits += [limit] * max(0, min(times, MAX_ARMED - len(self.rate_limits)))

    # ------------------------------------------------------------------ checks

    def _read(
        self,
    ) -> tuple[dict[str, IntentRecord], dict[str, list[HistoryRow]], sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        records = {r.client_order_id: r for r in list_intents(conn, limit=1_000_000)}
        histories = {coid: history(conn, coid) for coid in records}
        return records, histories, conn

    async def check_safety(self) -> None:
        """What must hold at every moment."""
        duplicates = self.venue.duplicate_client_ids()
        assert not duplicates, f"client ids that reached the venue twice: {duplicates}"
        refused = self.venue.refused_duplicates
        assert not refused, f"resent while the venue held the order open (-2010): {refused}"
        records, histories, conn = self._read()
        with closing(conn):
            self._check_fills(records, conn)
        self._check_stream_reported(histories)
        for coid, request in self.acked.items():
            record = records.get(coid)
            assert record is not None, f"acknowledged intent {coid} ({request}) is not stored"
            assert record.message_id == request["message_id"]
            assert record.type.value == request["type"], (record, request)
            assert record.side.value == request["side"], (record, request)
        for entry in self.venue.audit:
            assert entry.client_order_id in records, (
                f"venue order {entry.order_id} has client id {entry.client_order_id}, "
                "which no recorded intent has: sent before it was durable"
            )
        for coid, record in records.items():
            _check_history(coid, histories[coid], record.state)
            if _canceled_before_sending(histories[coid]):
                assert self._venue_order(coid) is None, f"{coid} canceled unsent, yet at the venue"

    def _check_fills(self, records: dict[str, IntentRecord], conn: sqlite3.Connection) -> None:
        """No fill stored twice or wrong, executed never past the venue's or the fills'.

        Every stored fill is a trade of the intent's venue order, with its
        quantity and price; the stored position is the signed sum of the stored
        fills (a fill counted twice would move it twice); an intent's executed
        quantity is at most the venue's, and at most what its stored fills add
        up to (a state is never recorded without the fills that made it).
        """
        signed = Decimal(0)
        for coid, record in records.items():
            order = self._venue_order(coid)
            fills = fills_for(conn, coid)
            trades = {t.trade_id: t for t in self.venue.trades_of(order.order_id)} if order else {}
            for fill in fills:
                trade = trades.get(fill.trade_id)
                assert order is not None and trade is not None, (
                    f"{coid}: stored {fill}, no such trade"
                )
                assert (fill.venue_order_id, fill.quantity, fill.price) == (
                    order.order_id,
                    trade.quantity,
                    trade.price,
                ), f"{coid}: stored {fill} != venue {trade}"
                signed += fill.quantity if fill.side is Side.BUY else -fill.quantity
            venue_executed = order.executed if order is not None else Decimal(0)
            stored = sum((f.quantity for f in fills), Decimal(0))
            assert record.executed_qty <= venue_executed, (
                f"{coid}: executed {record.executed_qty} > the venue's {venue_executed}"
            )
            assert record.executed_qty <= stored, (
                f"{coid}: executed {record.executed_qty} recorded with fills for {stored}"
            )
        position = positions(conn, ACCOUNT).get((ACCOUNT, SYMBOL), Decimal(0))
        assert position == signed, f"stored position {position} != its stored fills {signed}"

    def _check_stream_reported(self, histories: dict[str, list[HistoryRow]]) -> None:
        """An order the stream reported while SENDING or UNKNOWN is never resent after."""
        for coid, attempt in self.stream_reported.items():
            sends = 0
            for row in histories.get(coid, []):
                sends += row.target is S.SENDING
                resend = (row.source, row.target) == (S.UNKNOWN, S.PENDING)
                assert not (resend and sends >= attempt), (
                    f"{coid}: the stream reported it (send {attempt}), yet it was resent: "
                    + " -> ".join(r.target.value for r in histories[coid])
                )

    def _venue_order(self, coid: str) -> VenueOrder | None:
        found = [o for o in self.venue.orders.values() if o.client_order_id == coid]
        assert len(found) <= 1, f"{coid} has {len(found)} venue orders"
        return found[0] if found else None

    def _unsettled(self) -> list[str]:
        records, _, conn = self._read()
        conn.close()
        problems = []
        for coid, record in records.items():
            if record.state in (S.PENDING, S.SENDING, S.UNKNOWN):
                problems.append(f"{coid} is {record.state.value}")
                continue
            order = self._venue_order(coid)
            if order is None:
                continue
            if record.state is not _venue_state(self.venue, order):
                problems.append(
                    f"{coid} is {record.state.value}, the venue says {order.status.value}"
                )
            elif order.is_open and record.cancel_requested_at_ms is not None:
                problems.append(f"{coid}: cancel requested, still {order.status.value}")
        return problems

    async def finish(self) -> None:
        """Faults off, time past the grace: everything resolved and in agreement."""
        self.venue.clear_faults()
        self.store_fault = None
        self.rate_limits.clear()
        await self._settle()
        await trio.sleep(FINAL_MIN_S)
        deadline = trio.current_time() + FINAL_LIMIT_S
        while problems := self._unsettled():
            if trio.current_time() >= deadline:
                raise AssertionError(
                    f"not resolved {FINAL_MIN_S + FINAL_LIMIT_S:g}s after the faults stopped "
                    f"(kills: {self.kills}): {problems}"
                )
            await trio.sleep(1.0)
        await self._settle()
        self._check_agreement()

    def _check_agreement(self) -> None:
        records, histories, conn = self._read()
        with closing(conn):
            signed = Decimal(0)
            for coid, record in records.items():
                order = self._venue_order(coid)
                if order is None:
                    unsent = _canceled_before_sending(histories[coid])
                    assert record.state is S.REJECTED or unsent, (
                        f"{coid} is {record.state.value} but never reached the venue"
                    )
                    continue
                assert record.venue_order_id == order.order_id, (record, order)
                assert record.state is _venue_state(self.venue, order), (record, order)
                assert record.executed_qty == order.executed, (record, order)
                trades = {t.trade_id: t.quantity for t in self.venue.trades_of(order.order_id)}
                fills = {f.trade_id: f.quantity for f in fills_for(conn, coid)}
                assert fills == trades, (
                    f"{coid} ({record.state.value}, executed {record.executed_qty}): "
                    f"stored fills {fills} != venue trades {trades}"
                )
                sign = 1 if order.side is Side.BUY else -1
                signed += sign * order.executed
            stored_position = positions(conn, ACCOUNT).get((ACCOUNT, SYMBOL), Decimal(0))
            assert stored_position == signed, (stored_position, signed)
        for coid in self.acked:
            assert records[coid].state in TERMINAL_STATES | {S.ACCEPTED, S.PARTIALLY_FILLED}
        inc = self.current
        assert inc is not None and inc.service.pipeline is not None
        pipeline = inc.service.pipeline
        reconciler = pipeline.reconciler
        assert reconciler.sending_enabled.is_set()
        assert not reconciler.unknown_venue_orders, reconciler.unknown_venue_orders
        # Memory agrees with the store: the live set, and the risk book built on it.
        live = {r.client_order_id: r for r in pipeline.ledger.live()}
        stored_live = {c: r for c, r in records.items() if not r.is_terminal}
        assert live == stored_live, (live, stored_live)
        book = pipeline.ledger.risk.book
        assert book.open_orders(ACCOUNT) == len(live), (book.snapshot(), sorted(live))
        assert book.position(ACCOUNT, SYMBOL) == signed, (book.snapshot(), signed)


def _venue_state(venue: ModelVenue, order: VenueOrder) -> OrderState:
    return from_order_report(venue.report(order))


def _check_history(coid: str, rows: list[HistoryRow], state: OrderState) -> None:
    path = " -> ".join(r.target.value for r in rows)
    assert rows, f"{coid} has no history"
    assert rows[0].source is None and rows[0].target is S.PENDING, f"{coid}: {path}"
    for before, after in itertools.pairwise(rows):
        assert after.source is before.target, f"{coid}: history does not chain: {path}"
        assert after.target in TRANSITIONS[before.target], f"{coid}: illegal step in {path}"
        if (after.source, after.target) == (S.SENDING, S.PENDING):
            assert after.reason.startswith(NOT_EXECUTED_CAUSES), f"{coid}: {after.reason}"
    assert rows[-1].target is state, f"{coid}: history {path} does not end in {state.value}"


def _canceled_before_sending(rows: list[HistoryRow]) -> bool:
    return bool(rows) and (rows[-1].source, rows[-1].target) == (S.PENDING, S.CANCELED)


def _limited(status: int | None, retry_after_s: float | None) -> VenueRateLimitedError:
    where = "the local rate limiter did not admit the request" if status is None else "429"
    return VenueRateLimitedError(
        f"{VENUE} POST /api/v3/order: {where}",
        retry_after_s=retry_after_s,
        banned=status == 418,
        venue=VENUE,
        code=None if status is None else -1003,
        http_status=status,
        endpoint="POST /api/v3/order",
    )


# ----------------------------------------------------------------------------- the machine


class _TrioThread:
    """One Trio run, in a thread, that the synchronous machine calls into."""

    def __init__(self, world: World) -> None:
        self.world = world
        ready = threading.Event()
        self._outcome: list[BaseException] = []

        def run() -> None:
            try:
                trio.run(world.main, ready, clock=world.clock)
            except BaseException as exc:
                self._outcome.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="pipeline-machine", daemon=True)
        self._thread.start()
        ready.wait()
        if self._outcome:
            raise self._outcome[0]

    def call(self, fn: Callable[[], Awaitable[None]], *, settle: bool = True) -> None:
        token = self.world.token
        assert token is not None
        trio.from_thread.run(self.world.command, fn, settle, trio_token=token)

    def close(self) -> None:
        token = self.world.token
        if self._thread.is_alive() and token is not None:
            trio.from_thread.run(self.world.shutdown, trio_token=token)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the Trio thread did not stop"
        if self._outcome:
            raise self._outcome[0]


NEW_ORDER_FAULTS = st.one_of(
    st.sampled_from(
        [
            FaultKind.REJECT,
            FaultKind.ERROR_BEFORE,
            FaultKind.ERROR_AFTER,
            FaultKind.HANG_AFTER,
            FaultKind.UNAVAILABLE,
            FaultKind.KILL_BEFORE,
            FaultKind.KILL_AFTER,
        ]
    ).map(Fault),
    # Processed up to 5 s (recvWindow) late, past the 2 s send timeout; 6 s is refused.
    st.sampled_from([0.5, 3.0, 4.5, 6.0]).map(lambda d: Fault(FaultKind.SLOW, d)),
    # Visible to queries up to query_lag_s late.
    st.sampled_from([0.3, SETTINGS.query_lag_s]).map(lambda d: Fault(FaultKind.LAG, d)),
)
QUERY_FAULTS = st.one_of(
    st.sampled_from(
        [FaultKind.ERROR_BEFORE, FaultKind.UNAVAILABLE, FaultKind.KILL_BEFORE, FaultKind.KILL_AFTER]
    ).map(Fault),
    st.sampled_from([0.5, 3.0, 8.0, 9.5]).map(lambda d: Fault(FaultKind.SLOW, d)),
)
CANCEL_FAULTS = st.one_of(
    st.sampled_from(
        [
            FaultKind.REJECT,
            FaultKind.ERROR_BEFORE,
            FaultKind.ERROR_AFTER,
            FaultKind.HANG_AFTER,
            FaultKind.UNAVAILABLE,
            FaultKind.KILL_BEFORE,
            FaultKind.KILL_AFTER,
        ]
    ).map(Fault),
    st.just(Fault(FaultKind.SLOW, 3.0)),
)


@attrs.frozen
class RateLimit:
    """A new order refused by a rate limit: ``status`` None is our own limiter (never
    sent; ``retry_after_s`` its remaining freeze, if any), 429/418 the venue's answer
    (not processed; it refuses new orders for ``retry_after_s``)."""

    status: int | None
    retry_after_s: float | None


RATE_LIMITS = st.one_of(
    st.builds(RateLimit, st.none(), st.sampled_from([None, 0.5, 3.0])),
    st.builds(RateLimit, st.just(429), st.sampled_from([0.5, 2.0, 12.0])),
    st.builds(RateLimit, st.just(418), st.sampled_from([5.0, 30.0])),
)

#: Concurrent submissions: (new message or which one to repeat, type, side).
BATCHES = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 7)),
        st.sampled_from(["LIMIT", "MARKET"]),
        st.sampled_from(["BUY", "SELL"]),
    ),
    min_size=1,
    max_size=3,
)


@attrs.frozen
class ArmedFault:
    """Arm ``fault`` for the next ``times`` venue calls of kind ``call``."""

    call: Call
    fault: Fault
    times: int


@attrs.frozen
class StoreFault:
    """At the store transaction ``after`` calls from now: kill the process before
    it (rolled back) or after it (committed), or stall it and the ``times - 1``
    next ones ``stall_s`` (virtual) seconds each: a slow disk."""

    after: int
    kill: str | None  # None, "before" or "after"
    stall_s: float = 0.0
    times: int = 1


STORE_FAULTS = st.one_of(
    st.builds(StoreFault, st.integers(0, 6), st.sampled_from(["before", "after"])),
    # A slow disk: a few slow commits in a row overrun the send section's deadline.
    st.builds(
        StoreFault,
        st.integers(0, 6),
        st.none(),
        st.sampled_from([1.0, 2.5, 5.0]),
        st.integers(1, 3),
    ),
)
#: Faults of the queries.
QUERY_FAULT_PLANS = st.builds(
    ArmedFault,
    st.sampled_from([Call.GET_ORDER, Call.OPEN_ORDERS, Call.MY_TRADES]),
    QUERY_FAULTS,
    st.integers(1, 4),
)


class PipelineMachine(RuleBasedStateMachine):
    """The rules (see the module docstring). Preconditions read the world between
    rules, when the Trio thread has nothing to run and the clock stands still."""

    #: Whether the processes consume the venue's user data stream.
    STREAM: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._dir = Path(tempfile.mkdtemp(prefix="pipeline-machine-", dir=_TMP_ROOT))
        self._log = _ErrorLog()
        logging.getLogger("tradingd").addHandler(self._log)
        self.world = World(self._dir / "orders.db", self._log.records, stream=self.STREAM)
        self._broken = False
        self._trio = _TrioThread(self.world)

    def _do(self, fn: Callable[[], Awaitable[None]], *, settle: bool = True) -> None:
        try:
            self._trio.call(fn, settle=settle)
        except BaseException:
            self._broken = True
            raise

    @initialize(mode=st.sampled_from(DispatchMode), batch=BATCHES)
    def start(self, mode: DispatchMode, batch: list[tuple[int | None, str, str]]) -> None:
        """The first process, and the first submissions (so no example is without orders)."""
        self._do(lambda: self.world.start(mode))
        self._do(lambda: self.world.submit(batch, None))

    # A fault of an order call is armed together with the step that makes the
    # call (a submission, a cancel, a fill whose trades the tracker must fetch),
    # so that it meets that call rather than waiting for one that never comes.

    @rule(batch=BATCHES, fault=st.none() | NEW_ORDER_FAULTS | RATE_LIMITS)
    def submit(
        self, batch: list[tuple[int | None, str, str]], fault: Fault | RateLimit | None
    ) -> None:
        self._do(lambda: self.world.submit(batch, fault))

    @rule(limit=RATE_LIMITS, times=st.integers(1, 3))
    def rate_limit(self, limit: RateLimit, times: int) -> None:
        """Rate limits for the next new orders (a resend, or a later submission)."""
        self._do(lambda: self.world.arm_rate_limit(limit, times))

    @precondition(lambda self: bool(self.world.acked))
    @rule(pick=st.integers(0, 7), fault=st.none() | CANCEL_FAULTS)
    def cancel(self, pick: int, fault: Fault | None) -> None:
        self._do(lambda: self.world.cancel(pick, fault))

    @precondition(lambda self: bool(self.world.venue.open_order_list()))
    @rule(
        pick=st.integers(0, 7),
        action=st.sampled_from(["fill", "fill_part", "cancel", "expire"]),
        fault=st.none() | QUERY_FAULTS,
    )
    def venue_acts(self, pick: int, action: str, fault: Fault | None) -> None:
        """The market or an operator acts on a resting order; the fills query may fail."""
        self._do(lambda: self.world.venue_act(pick, action, fault))

    @rule(plan=QUERY_FAULT_PLANS)
    def query_fault(self, plan: ArmedFault) -> None:
        self._do(lambda: self.world.arm(plan.call, plan.fault, plan.times))

    @rule(fault=STORE_FAULTS)
    def store_fault(self, fault: StoreFault) -> None:
        self._do(lambda: self.world.arm_store_fault(fault))

    @rule(seconds=st.sampled_from([0.0, 0.2, 0.6, 1.5, 3.0, 12.0]))
    def advance(self, seconds: float) -> None:
        self._do(lambda: self.world.advance(seconds))

    @rule(hard=st.booleans())
    def restart(self, hard: bool) -> None:
        """``kill -9`` (hard) or a graceful stop (drain), then a new process."""
        self._do(self.world.crash if hard else self.world.graceful_restart)

    @invariant()
    def safety(self) -> None:
        self._do(self.world.check_safety, settle=False)

    def teardown(self) -> None:
        try:
            if not self._broken:
                self._do(self.world.finish)
                self._do(self.world.check_safety, settle=False)
        finally:
            try:
                self._trio.close()
            finally:
                logging.getLogger("tradingd").removeHandler(self._log)
                shutil.rmtree(self._dir, ignore_errors=True)


PipelineMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    # No explain phase: it replays a failure many times under tracing, which
    # costs minutes here and adds nothing the step list does not show.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestPipelineMachine = PipelineMachine.TestCase


STREAM_FAULTS = st.one_of(
    st.builds(
        StreamFault,
        st.sampled_from([StreamFaultKind.DROP, StreamFaultKind.TERMINATE]),
        st.integers(0, 4),
    ),
    st.builds(
        StreamFault,
        st.just(StreamFaultKind.STALL),
        st.integers(0, 4),
        st.sampled_from([0.3, 2.0, 6.0, 12.0]),
    ),
    st.sampled_from([StreamFault(StreamFaultKind.REFUSE), StreamFault(StreamFaultKind.FAIL)]),
)


class StreamPipelineMachine(PipelineMachine):
    """The same machine with the venue's user data stream on, and faulted.

    Each process consumes the model venue's stream
    (:class:`~tests.helpers.model_userstream.ModelUserStream`, run by the
    pipeline's real :class:`~daemon.orders.userstream.UserStreams`), so pushed
    events, polling while the stream is down, the tracker's and the
    reconciler's queries and the reconciliation after every subscription all
    overlap on the same orders. The ``stream_fault`` rule drops the stream
    (the pipeline subscribes again after its backoff; events meanwhile are
    lost), terminates it, stalls it (events held, then delivered in order) or
    refuses the next subscription, after a few more events or at once.

    ``order_transport`` (``rest`` or ``ws-api``) does not exist at this level:
    it picks the Binance client's transport, and here the model venue is the
    order client either way; what the pipeline sees of the two transports —
    an answer, a definitive error, or no answer (UNKNOWN) — is what the model's
    faults produce.

    Added to the invariants (for both machines, checked after every step): no
    fill stored twice or unlike the venue's trade, the stored position the
    sum of the stored fills, no executed quantity beyond the venue's or the
    stored fills', no resend of an order the venue holds open, and none of an
    order the stream reported while its record was SENDING or UNKNOWN.
    """

    STREAM = True

    @rule(fault=STREAM_FAULTS)
    def stream_fault(self, fault: StreamFault) -> None:
        self._do(lambda: self.world.arm_stream(fault))


StreamPipelineMachine.TestCase.settings = settings(
    PipelineMachine.TestCase.settings, max_examples=150
)
TestStreamPipelineMachine = StreamPipelineMachine.TestCase


# ----------------------------------------------------------------------------- found by the machine
#
# Fixed step sequences the machine found (or that narrow a race it can only
# reach by luck), replayed through the same rules and checks. The timelines in
# the docstrings follow from SETTINGS: grace 10.5 s, tracker every 0.5 s,
# periodic full pass every 5 s, send timeout 2 s.

MARKET_BUY: Final = (None, "MARKET", "BUY")
Step = Callable[["PipelineMachine"], None]


def _play(*steps: Callable[[PipelineMachine], None], stream: bool = False) -> PipelineMachine:
    """Start a process, run ``steps`` with the safety checks after each, then the final checks
    (``stream``: with the venue's user data stream on)."""
    machine = StreamPipelineMachine() if stream else PipelineMachine()
    try:
        machine._do(lambda: machine.world.start(DispatchMode.SHARDED))
        for step in steps:
            step(machine)
            machine.safety()
    finally:
        machine.teardown()
    return machine


def _arm(call: Call, fault: Fault, times: int = 1) -> Callable[[PipelineMachine], None]:
    return lambda machine: machine._do(lambda: machine.world.arm(call, fault, times))


def _submit(*batch: tuple[int | None, str, str]) -> Callable[[PipelineMachine], None]:
    return lambda machine: machine.submit(list(batch), None)


def _advance(seconds: float) -> Callable[[PipelineMachine], None]:
    return lambda machine: machine.advance(seconds)


def test_fills_are_not_lost_when_the_trade_query_fails() -> None:
    """A resting order fills; the poll sees it closed, but the fills query fails.

    The order must not be recorded FILLED without its fills (it would never be
    looked at again, and the position derives from fills).
    """
    _play(
        _submit((None, "LIMIT", "BUY")),
        _arm(Call.MY_TRADES, Fault(FaultKind.ERROR_BEFORE)),
        lambda machine: machine.venue_acts(pick=0, action="fill", fault=None),
        _advance(0.6),
    )


def test_a_late_not_found_answer_proves_nothing_about_later() -> None:
    """A "no such order" describes the venue when the query *arrived*, not when it came back.

    t=0 a MARKET order is sent; the venue processes it at 4.5 (the request was
    slow), after the client gave up at 2 (UNKNOWN). The tracker's query leaves
    at 2.5 and finds nothing; its answer comes back at 12, past the 10.5 s
    grace, while the periodic passes at 5 and 10 fail. Counting the grace up to
    the answer's arrival "proves" absence and resends: a second MARKET order.
    """
    machine = _play(
        _arm(Call.NEW_ORDER, Fault(FaultKind.SLOW, 4.5)),
        _arm(Call.GET_ORDER, Fault(FaultKind.SLOW, 9.5)),
        _arm(Call.GET_ORDER, Fault(FaultKind.UNAVAILABLE), 2),
        _submit(MARKET_BUY),
        _advance(12.0),
        _advance(12.0),
    )
    assert not machine.world.venue.armed(), "the scenario did not play out as described"
    assert len(machine.world.venue.audit) == 1


def test_an_answer_about_an_earlier_send_is_not_applied_to_a_resend() -> None:
    """A query's outcome belongs to the send it asked about, not to a later resend.

    t=0 the first send fails before processing (UNKNOWN). 10.5: the tracker
    queries (answer delayed to 18.5). 15: the periodic pass proves absence and
    resends; the resend is processed late (19.5), the client gives up at 17
    (UNKNOWN again). 18.5: the tracker's old "not found" — true of the *first*
    send — must not send a third time: that one fills at once, and the second
    request then becomes a second MARKET order.
    """
    machine = _play(
        _arm(Call.NEW_ORDER, Fault(FaultKind.ERROR_BEFORE)),
        _arm(Call.NEW_ORDER, Fault(FaultKind.SLOW, 4.5)),
        _submit(MARKET_BUY),
        _advance(10.2),
        _arm(Call.GET_ORDER, Fault(FaultKind.SLOW, 8.0)),
        _advance(12.0),
        _advance(12.0),
    )
    assert not machine.world.venue.armed(), "the scenario did not play out as described"
    assert len(machine.world.venue.audit) == 1


def _limit(status: int | None, retry_after_s: float | None, times: int = 1) -> Step:
    return lambda machine: machine.rate_limit(RateLimit(status, retry_after_s), times)


Paths = dict[str, list[tuple[OrderState, str]]]


def _keep_history(into: Paths) -> Step:
    """A step that copies every intent's (state, reason) history into ``into``."""

    def keep(machine: PipelineMachine) -> None:
        _, histories, conn = machine.world._read()
        conn.close()
        into.update({c: [(h.target, h.reason) for h in rows] for c, rows in histories.items()})

    return keep


def test_a_rate_limited_order_goes_out_once_after_the_retry_after() -> None:
    """t=0 our own limiter refuses the first send (unsent), the venue answers the
    second 429 with Retry-After 2 s: back to PENDING twice, then sent once, at 3 s
    (a 1 s backoff, then the 2 s the venue asked for)."""
    histories: Paths = {}
    machine = _play(
        _limit(None, None),
        _limit(429, 2.0),
        _submit(MARKET_BUY),
        _advance(0.6),
        _advance(3.0),
        _keep_history(histories),
    )
    assert not machine.world.rate_limits, "the scenario did not play out as described"
    [entry] = machine.world.venue.audit
    assert entry.at_s >= 3.0
    [path] = histories.values()
    assert [state for state, _ in path] == [
        S.PENDING,
        S.SENDING,
        S.PENDING,
        S.SENDING,
        S.PENDING,
        S.SENDING,
        S.ACCEPTED,
        S.FILLED,
    ]
    assert path[2][1] == "rate limited locally, not sent; retry after 1.0 s"
    assert path[4][1] == "venue 429: not executed (-1003); retry after 2.0 s"


def test_intents_held_back_by_a_rate_limit_are_canceled_locally_or_sent_in_order() -> None:
    """A 418 (30 s) holds the venue: the rate-limited intent and the next one wait as
    PENDING; the caller cancels one of them — canceled locally, never sent — and the
    other goes out once when the ban ends."""
    histories: Paths = {}
    machine = _play(
        _limit(418, 30.0),
        _submit((None, "LIMIT", "BUY"), (None, "LIMIT", "SELL")),
        _advance(3.0),
        lambda machine: machine.cancel(pick=0, fault=None),
        _advance(12.0),
        _advance(20.0),
        _keep_history(histories),
    )
    canceled = [c for c, path in histories.items() if path[-1][0] is S.CANCELED]
    assert len(canceled) == 1
    assert histories[canceled[0]][-1] == (S.CANCELED, "canceled before sending")
    assert [e.client_order_id for e in machine.world.venue.audit] == [
        c for c in histories if c not in canceled
    ]
    assert machine.world.venue.audit[0].at_s >= 30.0


# ----------------------------------------------------------------------------- with the stream
#
# The user data stream as a source of fills and as a second witness. LAG_UNANSWERED
# is a venue lagging beyond any honest query_lag_s (1 s here): queries cannot see
# the order, only the stream can.

LIMIT_BUY: Final = (None, "LIMIT", "BUY")


def _stream_fault(kind: StreamFaultKind, after_events: int = 0) -> Step:
    fault = StreamFault(kind, after_events)
    return lambda machine: machine.stream_fault(fault)


def _streams(machine: PipelineMachine) -> UserStreams:
    inc = machine.world.current
    assert inc is not None and inc.service.seen is not None
    return inc.service.seen.streams


def _fill(action: str) -> Step:
    return lambda machine: machine.venue_acts(pick=0, action=action, fault=None)


def test_a_trade_event_after_missed_ones_reads_the_order_trades() -> None:
    """The stream drops; a resting order half fills meanwhile (its event is lost), and
    neither polling nor the reconciliation after the next subscription can read the
    venue. The next trade's event says executed 0.010 where the record has 0 plus
    this trade's 0.005: events were missed, so the order's trades are fetched — both
    stored once, the position moved once."""
    machine = _play(
        _advance(0.2),
        _submit(LIMIT_BUY),
        _stream_fault(StreamFaultKind.DROP),
        _fill("fill_part"),
        _arm(Call.GET_ORDER, Fault(FaultKind.UNAVAILABLE), 4),
        _arm(Call.OPEN_ORDERS, Fault(FaultKind.UNAVAILABLE), 4),
        _advance(1.5),
        _fill("fill"),
        stream=True,
    )
    [applier] = _streams(machine).appliers.values()
    assert applier.counts.fetched == 1
    assert machine.world.venue.stream.subscribed == 2


def _lagging_market_buy(lag_s: float) -> list[Step]:
    return [
        _arm(Call.NEW_ORDER, Fault(FaultKind.LAG_UNANSWERED, lag_s)),
        _submit(MARKET_BUY),
    ]


def test_the_stream_proves_an_order_the_queries_cannot_see() -> None:
    """Subscribed before the send, the stream pushes the order's NEW and trades while
    queries will not see it for 30 s: the UNKNOWN order is FILLED at once, never resent."""
    histories: Paths = {}
    machine = _play(
        _advance(0.2),
        *_lagging_market_buy(30.0),
        _keep_history(histories),
        _advance(12.0),
        _advance(12.0),
        stream=True,
    )
    [path] = histories.values()
    assert [state for state, _ in path][:3] == [S.PENDING, S.SENDING, S.UNKNOWN]
    assert path[-1][0] is S.FILLED and S.PENDING not in [state for state, _ in path[1:]]
    assert len(machine.world.venue.audit) == 1


def _stream_down_during_a_lagging_send(lag_s: float) -> list[Step]:
    """t=0.2 the stream drops and the next three subscriptions fail (backoff 1, 2, 4,
    8 s: up again at 15.2); a MARKET order sent at 0.2 is invisible to queries for
    ``lag_s``."""
    return [
        _advance(0.2),
        _stream_fault(StreamFaultKind.DROP),
        *[_stream_fault(StreamFaultKind.REFUSE)] * 3,
        *_lagging_market_buy(lag_s),
        _advance(12.0),
        _advance(12.0),
        _advance(12.0),
    ]


def test_with_the_stream_down_in_the_window_the_resend_is_held() -> None:
    """The stream was down when the order was processed (its events are lost for good):
    "not found" after the 10.5 s grace proves nothing yet, the resend is held 10 s
    more (unwitnessed_hold_s), and the order, visible at 15.2 s, is adopted."""
    machine = _play(*_stream_down_during_a_lagging_send(15.0), stream=True)
    assert len(machine.world.venue.audit) == 1
    assert _streams(machine).witnesses[VENUE].held_total == 1


def test_without_the_stream_the_same_lag_gets_a_duplicate() -> None:
    """The other direction: with queries alone, the venue lagging past query_lag_s
    turns "not found" into a false proof of absence and a second MARKET order."""
    with pytest.raises(AssertionError, match="reached the venue twice"):
        _play(_advance(0.2), *_lagging_market_buy(15.0), _advance(12.0), _advance(12.0))


def test_an_order_the_stream_reported_during_an_overrun_send_is_not_resent() -> None:
    """t=0.2 a MARKET order is sent and filled at once; the venue answers 503 and will
    not show it to queries for 30 s; the stream pushes its NEW and both trades at once.
    Persisting the UNKNOWN stalls on a slow disk (5 s), so the send section overruns
    its 4 s deadline and the row stays SENDING until the tracker settles it. The
    applier, which waited for the order's lock, used to drop the three events as
    old news ("SENDING cannot be seen here"); then "not found" after the 10.5 s
    grace "proved" absence and the resend at 11 s was a second MARKET order.

    Fixed twice over: the applier applies reports to a SENDING row whose section
    overran (``Executor.section_over``), and an order the stream reported
    (``StreamWitness.saw``) is never proven absent by a query.
    """
    _play(
        _advance(0.2),
        lambda machine: machine.store_fault(StoreFault(1, None, 5.0, 1)),
        *_lagging_market_buy(30.0),
        _advance(12.0),
        _advance(12.0),
        _advance(12.0),
        stream=True,
    )


def test_an_order_whose_trade_the_stream_reported_is_not_resent() -> None:
    """t=0.2 the stream drops; a LIMIT order is sent (503, invisible to queries for
    40 s) and half filled, both events lost. At 1.2 the stream is back; the order
    fills, and its TRADE event (executed 0.010, record at 0) sends the applier to
    the order's trades — whose query fails, so nothing is recorded. The record stays
    UNKNOWN, the witness has seen the order; after the held grace (20.5 s: the
    stream was down in the window) "not found" used to resend it: a second order.
    Now ``judge_not_found`` answers NotFoundYet for an order the stream reported,
    and the order is adopted once a query shows it."""
    _play(
        _advance(0.2),
        _stream_fault(StreamFaultKind.DROP),
        _arm(Call.NEW_ORDER, Fault(FaultKind.LAG_UNANSWERED, 40.0)),
        _submit(LIMIT_BUY),
        _fill("fill_part"),
        _advance(1.5),
        _arm(Call.MY_TRADES, Fault(FaultKind.ERROR_BEFORE)),
        _fill("fill"),
        _advance(12.0),
        _advance(12.0),
        _advance(12.0),
        stream=True,
    )


def test_a_stream_session_that_fails_is_logged_as_a_failure_not_a_crash() -> None:
    """A source's ``run`` may raise a :class:`~daemon.errors.TradingdError` (the Binance
    client raises a refused API key; here the next session cannot connect): the loop
    logs it as an error and retries after its backoff. ``source.run`` runs inside
    the nursery of the applier, so the error arrives in an exception group: the loop
    used ``except TradingdError``, which never matched, and logged the expected
    failure as "failed unexpectedly" with a traceback; it now uses ``except*``."""
    _play(
        _advance(0.2),
        _stream_fault(StreamFaultKind.FAIL),
        _stream_fault(StreamFaultKind.DROP),
        _advance(3.0),
        stream=True,
    )


def _restart(hard: bool) -> Step:
    return lambda machine: machine.restart(hard)


def test_the_risk_book_counts_each_fill_once_across_a_restart() -> None:
    """Found by the machine (no stream involved). A resting BUY of 0.010 half fills;
    process 2's start-up status query is answered 0.5 s late with what the venue
    had when it arrived (0.005 executed), while the rest fills meanwhile. Its fills
    query, made after, lists both trades: both are stored (position 0.010 in the
    store) with executed_qty 0.005. Process 3 loads the book: position 0.010 from
    the fills, plus a reservation restored as "0.005 executed, already in the
    position"; the FILLED answer then moved the position by the 0.005 more
    executed: 0.015 in the risk book, 0.010 at the venue and in the store. Now
    ``OrderLedger.load`` restores the reservation as executed by whichever is more,
    the record's executed_qty or its stored fills."""
    _play(
        _submit(LIMIT_BUY),
        _arm(Call.GET_ORDER, Fault(FaultKind.SLOW, 0.5)),
        _fill("fill_part"),
        _restart(False),
        _fill("fill"),
        _restart(False),
    )
