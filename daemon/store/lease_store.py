"""The async face of account leases, and the fenced order tables.

:class:`LeaseStore` runs the backend's lease functions
(``store.sql.leases``, :class:`~daemon.store.dialect.LeasesSql`) in CRITICAL
transactions: a lease is acted on only once it is durable.

:class:`FencedOrdersSql` wraps the order tables' functions of a backend
(:class:`~daemon.store.dialect.OrdersSql`) so that **every write of an
account's order data checks, in its own transaction, that this daemon still
holds the account's lease with its fencing token** (the rules:
:mod:`daemon.store.lease_rules`): state changes (the check runs right after
the intent's row is read or locked), cancel marks, fills, and intents
recorded by entry. A daemon that lost the account — paused, partitioned, then
resumed after another one took over — gets
:class:`~daemon.errors.LeaseLostError` and nothing is written. The same
wrapper narrows the start-up read (:meth:`FencedOrdersSql.non_terminal`) to
the accounts this daemon trades, so a pipeline never loads another daemon's
live orders into memory.

Backend-neutral: no SQL and no driver here; :class:`~daemon.store.orders.OrderStore`
takes the wrapper as its ``sql``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Unpack

from daemon.orders.records import FillRecord, HistoryRow, IntentRecord
from daemon.orders.state import OrderState, Transition
from daemon.risk.state import TradingState
from daemon.store.base import Durability, StoreOwner
from daemon.store.dialect import LeasesSql, OrdersSql
from daemon.store.lease_rules import Claim, Fence, LeaseGrant, LeaseRow
from daemon.store.orders_rules import ProgressFields, ReportFields

__all__ = ["FencedOrdersSql", "LeaseStore"]


class LeaseStore:
    """Account leases on an open store (every method is one transaction).

    Args:
        store: The database owner; its dialect's lease functions run.
        server_clock: Epoch seconds standing in for the store's clock (tests in
            virtual time); ``None``: the database's own clock, as in production.
    """

    def __init__(
        self, store: StoreOwner[Any], *, server_clock: Callable[[], float] | None = None
    ) -> None:
        self._store = store
        self.sql: LeasesSql = store.sql.leases
        self._server_clock = server_clock

    def _now_ms(self) -> int | None:
        return None if self._server_clock is None else int(self._server_clock() * 1000)

    async def claim(
        self, accounts: Iterable[str], *, owner: str, holder: str, ttl_s: float, claim: Claim
    ) -> list[LeaseGrant]:
        """Claim the leases of ``accounts`` (one transaction, in account order)."""
        wanted = tuple(accounts)
        now = self._now_ms()
        ttl_ms = max(1, int(ttl_s * 1000))
        return await self._store.write(
            lambda conn: self.sql.claim(
                conn, wanted, owner=owner, holder=holder, ttl_ms=ttl_ms, claim=claim, now_ms=now
            ),
            durability=Durability.CRITICAL,
            action=f"{claim.value} account leases",
        )

    async def release(self, accounts: Iterable[str], *, owner: str, holder: str) -> list[str]:
        """Give up the leases of ``accounts`` this holder holds; the released ones."""
        wanted = tuple(accounts)
        now = self._now_ms()
        return await self._store.write(
            lambda conn: self.sql.release(conn, wanted, owner=owner, holder=holder, now_ms=now),
            durability=Durability.CRITICAL,
            action="releasing account leases",
        )

    async def read(self) -> tuple[int, list[LeaseRow]]:
        """The store's clock (epoch ms) and every lease row."""
        now = self._now_ms()
        return await self._store.read(
            lambda conn: self.sql.read_leases(conn, now), action="reading account leases"
        )

    def fence(self, owner: str, tokens: Mapping[str, int]) -> Fence:
        """The check writers run: ``account`` must be leased to ``owner`` with the token
        ``tokens`` holds for it *now* (read when the check runs; no token: not held here)."""
        check = self.sql.check_fence

        def fence(conn: Any, account: str) -> None:
            check(conn, account, owner, tokens.get(account))

        return fence


class FencedOrdersSql:
    """A backend's order functions with the fencing check on every write.

    Args:
        inner: The backend's functions (``store.sql.orders``).
        fence: The check (:meth:`LeaseStore.fence`).
        trades: ``account -> bool``: the accounts this daemon trades now
            (:meth:`non_terminal` returns only theirs).
    """

    def __init__(self, inner: OrdersSql, fence: Fence, trades: Callable[[str], bool]) -> None:
        self.inner = inner
        self.fence = fence
        self.trades = trades

    def _check(self, conn: Any, accounts: Iterable[str]) -> None:
        for account in sorted(set(accounts)):
            self.fence(conn, account)

    # ------------------------------------------------------------------ fenced writes

    def record_intents(
        self,
        conn: Any,
        records: Sequence[IntentRecord],
        now_ms: int,
        *,
        sending: Collection[str] = (),
    ) -> tuple[list[IntentRecord], dict[str, IntentRecord]]:
        self._check(conn, (r.account for r in records))
        return self.inner.record_intents(conn, records, now_ms, sending=sending)

    def insert_intents(
        self, conn: Any, records: Sequence[IntentRecord], now_ms: int
    ) -> list[IntentRecord]:
        self._check(conn, (r.account for r in records))
        return self.inner.insert_intents(conn, records, now_ms)

    def apply_transitions(
        self,
        conn: Any,
        client_order_id: str,
        ts: Sequence[Transition],
        now_ms: int,
        *,
        fence: Fence | None = None,
        **fields: Unpack[ReportFields],
    ) -> IntentRecord:
        return self.inner.apply_transitions(
            conn, client_order_id, ts, now_ms, fence=fence or self.fence, **fields
        )

    def update_progress(
        self,
        conn: Any,
        client_order_id: str,
        now_ms: int,
        *,
        fence: Fence | None = None,
        **fields: Unpack[ProgressFields],
    ) -> IntentRecord:
        return self.inner.update_progress(
            conn, client_order_id, now_ms, fence=fence or self.fence, **fields
        )

    def request_cancel(
        self, conn: Any, client_order_id: str, now_ms: int, *, fence: Fence | None = None
    ) -> IntentRecord:
        return self.inner.request_cancel(conn, client_order_id, now_ms, fence=fence or self.fence)

    def cancel_unsent(
        self,
        conn: Any,
        client_order_id: str,
        t: Transition,
        now_ms: int,
        *,
        fence: Fence | None = None,
    ) -> IntentRecord:
        return self.inner.cancel_unsent(conn, client_order_id, t, now_ms, fence=fence or self.fence)

    def insert_fills(self, conn: Any, fills: Sequence[FillRecord], now_ms: int) -> list[FillRecord]:
        self._check(conn, (f.account for f in fills))
        return self.inner.insert_fills(conn, fills, now_ms)

    # ------------------------------------------------------------------ not an account's

    def save_trading_state(
        self, conn: Any, scope: str, state: str | TradingState, reason: str, now_ms: int
    ) -> None:
        self.inner.save_trading_state(conn, scope, state, reason, now_ms)

    # ------------------------------------------------------------------ reads

    def non_terminal(self, conn: Any) -> list[IntentRecord]:
        """Unfinished intents of the accounts this daemon trades (start-up's memory)."""
        return [r for r in self.inner.non_terminal(conn) if self.trades(r.account)]

    def get_intent(self, conn: Any, client_order_id: str) -> IntentRecord | None:
        return self.inner.get_intent(conn, client_order_id)

    def load_intents(self, conn: Any, client_order_ids: Sequence[str]) -> dict[str, IntentRecord]:
        return self.inner.load_intents(conn, client_order_ids)

    def history(self, conn: Any, client_order_id: str) -> list[HistoryRow]:
        return self.inner.history(conn, client_order_id)

    def fills_for(self, conn: Any, client_order_id: str) -> list[FillRecord]:
        return self.inner.fills_for(conn, client_order_id)

    def filled_of_unfinished(self, conn: Any) -> dict[str, Decimal]:
        return self.inner.filled_of_unfinished(conn)

    def positions(self, conn: Any, account: str | None = None) -> dict[tuple[str, str], Decimal]:
        return self.inner.positions(conn, account)

    def find_by_venue_order_id(
        self, conn: Any, venue: str, venue_order_id: int
    ) -> IntentRecord | None:
        return self.inner.find_by_venue_order_id(conn, venue, venue_order_id)

    def load_trading_states(self, conn: Any) -> list[tuple[str, str, str, int]]:
        return self.inner.load_trading_states(conn)

    def counts_by_state(self, conn: Any) -> dict[str, int]:
        return self.inner.counts_by_state(conn)

    def list_intents(
        self,
        conn: Any,
        *,
        account: str | None = None,
        states: Collection[OrderState] | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[IntentRecord]:
        return self.inner.list_intents(
            conn, account=account, states=states, limit=limit, before_seq=before_seq
        )
