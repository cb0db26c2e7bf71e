"""One incarnation of the order pipeline: its parts, how they are wired, their status.

:meth:`Pipeline.build` wires the parts drawn in :mod:`daemon.orders.service`
over the ledger of one run of :class:`~daemon.orders.service.OrdersService`:
the :class:`~daemon.orders.executor.Executor` runs the per-account queues of the
:class:`~daemon.orders.dispatch.Dispatcher`, the :class:`~daemon.orders.entry.Entry`
reserves their slots and takes the executor's fast path, the
:class:`~daemon.orders.reconcile.Reconciler` resolves and tracks, and the
:class:`~daemon.orders.userstream.UserStreams` apply the venues' events (and
tell the tracker which venues need no polling). The service runs and drains
them; the parts that follow a reload take the new settings from
:meth:`Pipeline.apply_settings`. With account leases
(:mod:`daemon.orders.lease`), an incarnation runs the accounts this daemon
holds; the executor asks the leases for each send window, and a renewal that
reopens one queues the PENDING intents again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import trio

from daemon.config import OrdersConfig
from daemon.orders.dispatch import Dispatcher, DispatchMode
from daemon.orders.entry import Entry
from daemon.orders.executor import Executor
from daemon.orders.lease import AccountLeases
from daemon.orders.ledger import OrderLedger, VenueAccess
from daemon.orders.reconcile import Reconciler
from daemon.orders.userstream import StreamWitness, UserStreamAccess, UserStreams
from daemon.store.orders import OrderStore

__all__ = ["Pipeline"]


@attrs.define
class Pipeline:
    """One incarnation's parts."""

    store: OrderStore
    ledger: OrderLedger
    dispatcher: Dispatcher
    executor: Executor
    entry: Entry
    reconciler: Reconciler
    streams: UserStreams

    @classmethod
    def build(
        cls,
        store: OrderStore,
        ledger: OrderLedger,
        venues: VenueAccess,
        accounts: Mapping[str, str],
        settings: OrdersConfig,
        *,
        reference_price: Callable[[str, str], Decimal | None] | None,
        wall_clock: Callable[[], float],
        leases: AccountLeases | None = None,
    ) -> Pipeline:
        """The parts over ``ledger``, wired; nothing runs yet (sending not enabled)."""
        sending_enabled = trio.Event()
        s = settings
        witnesses: dict[str, StreamWitness] = {}
        executor = Executor(
            ledger,
            venues,
            s,
            sending_enabled=sending_enabled,
            witnesses=witnesses,
            wall_clock=wall_clock,
            leases=leases,
        )
        dispatcher = Dispatcher(
            executor.handle,
            mode=DispatchMode(s.dispatch),
            shards=s.shards,
            capacity=s.account_queue_capacity,
            max_queues=s.max_account_queues,
            idle_s=s.idle_queue_s,
        )
        entry = Entry(
            ledger,
            dispatcher,
            venues,
            accounts,
            s,
            reference_price=reference_price,
            executor_ready=lambda account: executor.ready(accounts[account], account),
            stranded=executor.stuck,
            send_signals=executor.send_signals,
            wall_clock=wall_clock,
        )
        reconciler = Reconciler(
            ledger,
            executor,
            dispatcher,
            venues,
            accounts=accounts,
            settings=s,
            sending_enabled=sending_enabled,
            wall_clock=wall_clock,
        )
        access = venues if isinstance(venues, UserStreamAccess) else None
        streams = UserStreams(
            accounts.values(),
            access,
            ledger,
            executor,
            reconciler.full_pass,
            witnesses=witnesses,
        )
        reconciler.stream_up = streams.up
        if leases is not None:

            def renewed() -> None:
                # A send window reopened: queue what found it closed (in order).
                if executor.window_waiting and sending_enabled.is_set():
                    executor.window_waiting = False
                    reconciler.queue_pending()

            leases.on_renewed = renewed
        return cls(store, ledger, dispatcher, executor, entry, reconciler, streams)

    def apply_settings(self, settings: OrdersConfig) -> None:
        """A reload: the parts that read live settings take the new ones."""
        self.reconciler.settings = settings
        self.executor.settings = settings
        self.entry.settings = settings

    def status(self) -> dict[str, Any]:
        """The parts' state for ``/status`` (one key each)."""
        return {
            "orders": self.ledger.snapshot(),
            "entry": self.entry.snapshot(),
            "dispatch": self.dispatcher.snapshot(),
            "executor": self.executor.snapshot(),
            "reconcile": self.reconciler.snapshot(),
            "user_streams": self.streams.snapshot(),
            "risk": self.ledger.risk.book.snapshot(),
        }
