"""The order service's run under account leases: one pipeline incarnation per set of accounts.

:func:`run_leased` is the body of :meth:`daemon.orders.service.OrdersService.run`
once the store is open::

    claim the leases (START) ──► keeper task (renew, take over, notice losses)
        loop until stop:
            accounts = the active ones ──► incarnation(accounts): build, load their
                intents, start-up recovery (SENDING → UNKNOWN, resolve, queue PENDING),
                serve ── until stop, or an account lost / a takeover ready ──► drain
    release the leases (a clean stop: the next owner need not wait for the ttl)

An incarnation runs only the accounts this daemon holds. When one is lost,
its sends stop at once (no send window, fenced store writes) and the
incarnation is drained and rebuilt without it; when a takeover's wait is
over, the incarnation is rebuilt with it, and the new one recovers its
intents exactly as a start does. The other accounts pause for the drain and
the start-up pass: the proven path, reused, rather than a second recovery
path per account.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import trio

from daemon.config import OrdersConfig
from daemon.orders.lease import AccountLeases, default_instance_id
from daemon.store.base import StoreOwner
from daemon.store.lease_store import FencedOrdersSql, LeaseStore
from daemon.store.orders import OrderStore
from daemon.supervise import ChildContext

__all__ = ["RELEASE_TIMEOUT_S", "fenced", "first_of", "run_leased"]

log = logging.getLogger("tradingd.orders.lease")

#: Bound of the lease release at stop (a lease not released simply expires).
RELEASE_TIMEOUT_S: Final = 5.0

#: One incarnation over the given accounts: it serves until its third argument returns
#: (a stop was requested, or the leases changed), drains, and returns.
Incarnation = Callable[
    [frozenset[str], trio.TaskStatus[None], Callable[[], Awaitable[None]]], Awaitable[None]
]


def fenced(
    order_store: OrderStore,
    store: StoreOwner[Any],
    settings: OrdersConfig,
    accounts: Iterable[str],
    server_clock: Callable[[], float] | None = None,
) -> AccountLeases:
    """This daemon's leases over ``store``, with ``order_store``'s writes fenced by them.

    Every write of an account's orders then checks the account's lease in its own
    transaction, and start-up loads only the accounts this daemon trades.
    ``server_clock`` stands in for the database's clock (tests).
    """
    lease_store = LeaseStore(store, server_clock=server_clock)
    owner = settings.instance_id or default_instance_id()
    leases = AccountLeases(lease_store, settings, accounts, owner=owner)
    fence = lease_store.fence(owner, leases.tokens)
    order_store.sql = FencedOrdersSql(order_store.sql, fence, leases.trades)
    return leases


async def run_leased(
    ctx: ChildContext,
    leases: AccountLeases,
    incarnation: Incarnation,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Claim, keep and release the leases around incarnations (see the module docstring).

    ``task_status`` is passed to the first incarnation (it reports started after
    its start-up reconciliation); later ones start unreported.
    """
    await leases.start()
    stop = trio.Event()

    async def watch_stop() -> None:
        await ctx.wait_stop_requested()
        stop.set()

    async def until_stop_or_change() -> None:
        await first_of(stop.wait, leases.changed.wait)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_stop)
            await nursery.start(leases.run)
            status = task_status
            while not stop.is_set():
                accounts = leases.begin()
                standby = sorted(set(leases.leases) - accounts)
                log.info(
                    "orders: pipeline over accounts %s (not here: %s)",
                    ", ".join(sorted(accounts)) or "none",
                    ", ".join(standby) or "none",
                )
                await incarnation(accounts, status, until_stop_or_change)
                status = trio.TASK_STATUS_IGNORED
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
            await leases.release()


async def first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns (the others are cancelled)."""
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)
