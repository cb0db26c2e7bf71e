"""The order pipeline as a supervised child, and the stable gateway in front of it.

:class:`OrdersService` lives as long as the daemon; it *is* the
:class:`~daemon.orders.gateway.OrderGateway` the admin API and strategies
hold. Each run of its child (:meth:`OrdersService.run`) builds one
:class:`~daemon.orders.pipeline.Pipeline` incarnation over the store that is
open now (wired in :mod:`daemon.orders.pipeline`)::

    Entry (group commit) ──► Dispatcher (per-account queues) ──► Executor
          ▲                                                     │
          └──── OrderLedger (memory + durable changes) ◄────────┘
                        ▲
                Reconciler (start-up, periodic, tracker)

Start: the ledger is rebuilt from the store, start-up reconciliation runs,
and only then does the child report started — so the daemon's READY=1
follows reconciliation. Stop (graceful): entry refuses new submissions
(503), what is already queued for the store is committed, queued work drains
for at most ``drain_timeout_s``; what did not start stays PENDING for the
next start. A hard stop cancels at once: work not started stays PENDING, a
send section in flight finishes within its own deadline.

Trading states (halt / reduce-only / resume) belong to the service, not to
an incarnation: they are kept in memory across pipeline restarts and
persisted in the store, and a halt takes effect at once even when the
pipeline or the store is down.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import trio

from daemon.config import OrdersConfig
from daemon.errors import StoreError
from daemon.health import HealthLevel
from daemon.metrics import MetricFamily
from daemon.orders.dispatch import WorkItem
from daemon.orders.executor import OPEN_STATES
from daemon.orders.gateway import EntryUnavailableError, SubmitResult, UnknownOrderError
from daemon.orders.lease import AccountLeases
from daemon.orders.lease_run import fenced, run_leased
from daemon.orders.ledger import OrderLedger, VenueAccess
from daemon.orders.pipeline import Pipeline
from daemon.orders.records import IntentRecord
from daemon.orders.report import pipeline_metrics
from daemon.orders.state import OrderState
from daemon.resilience.deadletter import DeadLetterStore
from daemon.risk.book import RiskBook
from daemon.risk.limits import LimitTable
from daemon.risk.pretrade import PreTradeRisk
from daemon.risk.state import TradingState, TradingStates
from daemon.store.orders import OrdersBackend, OrderStore
from daemon.supervise import ChildContext

__all__ = ["OrdersService", "Pipeline"]

log = logging.getLogger("tradingd.orders")


class OrdersService:
    """The order pipeline's supervised child and the daemon's order gateway.

    Args:
        settings: ``[orders]``.
        accounts: Account name → venue name.
        limits: Risk limits (``[risk]`` and ``[accounts.NAME.risk]``).
        venues: Venue access (:class:`~daemon.app_trading.LinkVenues` in the daemon);
            when it also offers user data streams (:class:`UserStreamAccess`),
            they are run (:class:`~daemon.orders.userstream.UserStreams`).
        open_store: Waits for the store of the current data incarnation.
        reference_price: ``(venue, symbol) -> Decimal | None`` for MARKET orders.
    """

    def __init__(
        self,
        settings: OrdersConfig,
        accounts: Mapping[str, str],
        limits: LimitTable,
        venues: VenueAccess,
        open_store: Callable[[], Awaitable[OrdersBackend]],
        *,
        reference_price: Callable[[str, str], Decimal | None] | None = None,
        dead_letters: Callable[[OrdersBackend], DeadLetterStore | None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        lease_clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        #: Stands in for the store's clock in the leases (tests); ``None``: the database's.
        self.lease_clock = lease_clock
        self.leases: AccountLeases | None = None
        self.accounts = dict(accounts)
        self.limits = limits
        self.venues = venues
        self._open_store = open_store
        self.reference_price = reference_price
        self._dead_letters = dead_letters or (lambda store: store.dead_letters)
        self.wall_clock = wall_clock
        self.states = TradingStates(clock=wall_clock)
        self.pipeline: Pipeline | None = None
        self.incarnations = 0
        self._states_loaded = False
        self._order_store: OrderStore | None = None

    # ------------------------------------------------------------------ child

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim the account leases, then incarnations over the accounts held
        (:func:`~daemon.orders.lease_run.run_leased`): build, reconcile, report
        started, serve, drain."""
        store = await self._open_store()
        order_store = OrderStore(store, wall_clock=self.wall_clock)
        # Every write of an account's orders is fenced by its lease (SQLite too).
        leases = fenced(order_store, store, self.settings, self.accounts, self.lease_clock)
        self._order_store, self.leases = order_store, leases
        await self._load_states(order_store)
        incarnation = functools.partial(self._incarnation, store, order_store)
        await run_leased(ctx, leases, incarnation, task_status=task_status)

    async def _incarnation(
        self,
        store: OrdersBackend,
        order_store: OrderStore,
        accounts: frozenset[str],
        task_status: trio.TaskStatus[None],
        until: Callable[[], Awaitable[None]],
    ) -> None:
        """One incarnation over ``accounts``: serves until ``until`` returns (a stop
        was requested, or the leases changed), then drains."""
        book = RiskBook(self.limits, clock=trio.current_time)
        ledger = OrderLedger(
            order_store,
            PreTradeRisk(book, self.states),
            self._dead_letters(store),
            wall_clock=self.wall_clock,
        )
        pipeline = Pipeline.build(
            order_store,
            ledger,
            self.venues,
            {name: venue for name, venue in self.accounts.items() if name in accounts},
            self.settings,
            reference_price=self.reference_price,
            wall_clock=self.wall_clock,
            leases=self.leases,
        )
        dispatcher, entry = pipeline.dispatcher, pipeline.entry
        reconciler, streams = pipeline.reconciler, pipeline.streams
        self.incarnations += 1
        # Memory and the risk book from the store, before entry opens.
        await ledger.load()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                writer_scope = trio.CancelScope()

                async def writer(task_status: trio.TaskStatus[None]) -> None:
                    with writer_scope:
                        await entry.run_writer(task_status=task_status)

                await nursery.start(writer)
                # Entry may record intents while reconciliation runs (nothing is sent
                # before sending_enabled), so the gateway opens now.
                self.pipeline = pipeline
                await reconciler.startup()
                await nursery.start(streams.run)
                await nursery.start(reconciler.run_tracker)
                await nursery.start(reconciler.run_periodic)
                task_status.started()
                await until()
                await self._drain(pipeline, writer_scope)
                nursery.cancel_scope.cancel()
        finally:
            self.pipeline = None
            entry.close()
            entry.fail_queued()
            left = dispatcher.abort()
            if left:
                log.info("orders: %d queued work items not started; they stay durable", left)

    async def _drain(self, pipeline: Pipeline, writer_scope: trio.CancelScope) -> None:
        entry = pipeline.entry
        entry.close()
        deadline = trio.current_time() + self.settings.drain_timeout_s
        # Submissions already queued for the store are committed (their callers wait).
        with trio.move_on_at(deadline):
            await entry.wait_flushed()
        writer_scope.cancel()
        remaining = max(0.0, deadline - trio.current_time())
        left = await pipeline.dispatcher.drain(remaining)
        log.info(
            "orders: drained (%d queued items not started stay PENDING for the next start)", left
        )

    async def _load_states(self, store: OrderStore) -> None:
        if self._states_loaded:
            # Memory is the truth across incarnations (a halt made while the store
            # was down must survive): write it back.
            for scope, state, reason in self._state_rows():
                await store.save_trading_state(scope, state, reason)
            return
        for scope, state, reason, _at in await store.load_trading_states():
            account = None if scope == "*" else scope
            self.states.set_state(TradingState(state), account, reason=reason)
        self._states_loaded = True

    def _state_rows(self) -> list[tuple[str, str, str]]:
        snap = self.states.snapshot()
        rows = [("*", snap["global"]["state"], snap["global"]["reason"])]
        rows += [(name, row["state"], row["reason"]) for name, row in snap["accounts"].items()]
        return rows

    # ------------------------------------------------------------------ gateway

    def _live(self) -> Pipeline:
        pipeline = self.pipeline
        if pipeline is None:
            raise EntryUnavailableError(
                "the order pipeline is not running (starting or restarting)"
            )
        return pipeline

    async def submit(self, request: Mapping[str, Any]) -> SubmitResult:
        pipeline = self._live()
        if self.leases is not None:
            self.leases.admit(request)  # 503 if another daemon trades its account
        return await pipeline.entry.submit(request)

    async def get(self, client_order_id: str) -> IntentRecord:
        pipeline = self._live()
        record = pipeline.ledger.get(client_order_id)
        if record is not None:
            return record
        try:
            stored = await pipeline.store.get(client_order_id)
        except StoreError as exc:
            raise EntryUnavailableError(f"the store cannot be read: {exc}") from exc
        if stored is None:
            raise UnknownOrderError(client_order_id)
        return stored

    async def details(self, client_order_id: str) -> dict[str, Any]:
        """The intent, its state history and its fills (``GET /orders/{id}``)."""
        record = await self.get(client_order_id)
        pipeline = self._live()
        history = await pipeline.store.history(client_order_id)
        fills = await pipeline.store.fills_for(client_order_id)
        return {
            "order": record.to_json(),
            "history": [h.to_json() for h in history],
            "fills": [f.to_json() for f in fills],
        }

    async def cancel(self, client_order_id: str) -> IntentRecord:
        """A PENDING intent is canceled at once, without a venue request; anything
        later gets a durable cancel request (:meth:`OrderLedger.cancel`)."""
        pipeline = self._live()
        record = await self.get(client_order_id)
        requested = record.cancel_requested_at_ms is not None
        if record.is_terminal or (requested and record.state is not OrderState.PENDING):
            return record
        async with pipeline.ledger.lock(client_order_id):
            current = pipeline.ledger.get(client_order_id)
            if current is None:
                return await self.get(client_order_id)
            updated = await pipeline.ledger.cancel(current)
        if updated.state in OPEN_STATES:
            pipeline.reconciler.queue(WorkItem(updated.account, client_order_id, "cancel"))
        return updated

    async def open_orders(self, account: str | None = None) -> list[IntentRecord]:
        pipeline = self._live()
        return [r for r in pipeline.ledger.live() if account is None or r.account == account]

    async def list_orders(
        self, *, account: str | None = None, states: list[Any] | None = None, limit: int = 100
    ) -> list[IntentRecord]:
        pipeline = self._live()
        return await pipeline.store.list(account=account, states=states, limit=limit)

    async def positions(self, account: str | None = None) -> dict[tuple[str, str], Decimal]:
        pipeline = self._live()
        return await pipeline.store.positions(account)

    def apply_config(self, settings: OrdersConfig, limits: LimitTable) -> None:
        """A reload: new risk limits and live settings take effect at once.

        Only keys declared live change here (the poll and reconcile intervals and
        every risk limit); the rest of ``settings`` equals what is running.
        """
        self.settings = settings
        self.limits = limits
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.ledger.risk.book.set_limits(limits)
            pipeline.apply_settings(settings)

    # ------------------------------------------------------------------ operator switches

    async def set_trading_state(
        self, state: TradingState, account: str | None, *, reason: str
    ) -> dict[str, Any]:
        """Halt / reduce-only / resume one account or everything; persisted when possible.

        Takes effect in memory at once (the next submission sees it); the
        durable copy is written to the store, and if that fails the answer
        says so (the switch still holds until a restart).
        """
        if account is not None and account not in self.accounts:
            known = ", ".join(sorted(self.accounts)) or "none configured"
            raise ValueError(f"unknown account {account!r} (known: {known})")
        self.states.set_state(state, account, reason=reason)
        persisted = False
        error = None
        store = self._order_store
        if store is not None:
            try:
                await store.save_trading_state(account or "*", state.value, reason)
                persisted = True
            except StoreError as exc:
                error = f"not persisted: {exc}"
                log.error("trading state change not persisted: %s", exc)
        return {"states": self.states.snapshot(), "persisted": persisted, "error": error}

    # ------------------------------------------------------------------ status

    def check(self) -> tuple[HealthLevel, str | None]:
        pipeline = self.pipeline
        if pipeline is None:
            return HealthLevel.DEGRADED, "orders: pipeline not running"
        level, reason = pipeline.reconciler.check()
        if level is HealthLevel.HEALTHY and self.leases is not None:
            return self.leases.check()
        return level, reason

    def status(self) -> dict[str, Any]:
        pipeline = self.pipeline
        out: dict[str, Any] = {
            "running": pipeline is not None,
            "incarnations": self.incarnations,
            "accounts": dict(sorted(self.accounts.items())),
            "trading_states": self.states.snapshot(),
        }
        if self.leases is not None:
            out["leases"] = self.leases.snapshot()
        if pipeline is not None:
            out.update(pipeline.status())
        return out

    def metrics(self) -> list[MetricFamily]:
        """The pipeline's ``/metrics`` families (:func:`daemon.orders.report.pipeline_metrics`)."""
        return pipeline_metrics(self.pipeline)
