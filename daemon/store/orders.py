"""The durable order store: :class:`OrderStore`, the async face of the order tables.

Exactly-once effects (docs/ARCHITECTURE.md §4 Orders, §6) rest on what the
order tables commit, so every write is a ``synchronous=FULL`` transaction
(:attr:`~daemon.store.base.Durability.CRITICAL`) and carries its own proof.
The tables' code is cut by concern, one module each, as a second backend
would implement them:

* :mod:`~daemon.store.orders_rules` — the rules, with no SQL: fresh intents
  only, compare-and-set transitions checked against the table of
  :mod:`daemon.orders.state`, cumulative quantities that never move
  backwards, exact position arithmetic; the errors
  (:class:`~daemon.store.orders_rules.StaleStateError`,
  :class:`~daemon.store.orders_rules.UnknownIntentError`,
  :class:`~daemon.store.orders_rules.DuplicateIntentError`,
  :class:`~daemon.store.orders_rules.VenueOrderIdConflictError`, all
  ``PermanentError`` s drawn in :mod:`daemon.errors`);
* per backend, one module per concern — SQLite:
  :mod:`~daemon.store.orders_rows` (columns, reading and saving one intent),
  :mod:`~daemon.store.orders_outbox` (recording intents: one row per intent,
  a batch all or nothing), :mod:`~daemon.store.orders_transitions`
  (state changes, each with its history row in the same transaction),
  :mod:`~daemon.store.orders_fills` (fills idempotent on the venue trade id,
  moving positions in the same transaction),
  :mod:`~daemon.store.orders_queries` (recovery, reconciliation, admin) and
  :mod:`~daemon.store.trading_states` (operators' switches); PostgreSQL: the
  ``pg_orders_*.py`` modules beside them. The owner's dialect
  (``store.sql.orders``, :class:`~daemon.store.dialect.OrdersSql`) says which.

Two layers, as elsewhere in the store: those modules' pure synchronous
functions take their backend's connection and are called inside the
owner's :meth:`~daemon.store.base.StoreOwner.write` / ``read`` (so a caller
can compose several in one transaction — the group-commit writer records a
whole batch of intents in one commit), and :class:`OrderStore` here is the
async facade where every method is one transaction. Like every table module
it depends on the owner interface (:class:`~daemon.store.base.StoreOwner`),
not on an owner class.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Collection, Sequence
from decimal import Decimal
from typing import Any, Protocol, TypeVar, Unpack

from daemon.orders.records import FillRecord, HistoryRow, IntentRecord
from daemon.orders.state import OrderState, Transition
from daemon.resilience.deadletter import DeadLetterStore
from daemon.risk.state import TradingState
from daemon.store.base import Durability, StoreOwner
from daemon.store.dialect import OrdersSql
from daemon.store.orders_rules import ProgressFields, ReportFields

__all__ = ["OrderStore", "OrdersBackend"]

T = TypeVar("T")


class OrdersBackend(StoreOwner[Any], Protocol):
    """What the orders service needs of the open store (its ``open_store`` returns one).

    The owner the order tables run on (:class:`OrderStore` is built over it)
    and its durable dead letters; :class:`~daemon.store.sqlite.SqliteStore` and
    :class:`~daemon.store.postgres.PostgresStore` are.
    """

    @property
    def dead_letters(self) -> DeadLetterStore:
        """Where an order the pipeline cannot settle is parked for the operator."""
        ...


class OrderStore:
    """The async face of the order tables: every method is one transaction.

    Writes are :attr:`~daemon.store.base.Durability.CRITICAL` (``synchronous=FULL``):
    a caller told "recorded" must find the row after a power cut. Compose
    several steps in one transaction with :meth:`run_write` and the table
    modules' functions (the group-commit writer does).

    Args:
        store: The database owner; its dialect's :class:`~daemon.store.dialect.OrdersSql`
            (``store.sql.orders``) is what runs.
        wall_clock: Epoch seconds; every ``*_at_ms`` written comes from it.
    """

    def __init__(
        self, store: StoreOwner[Any], *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        #: The order tables' functions of the owner's backend (compose them in :meth:`run_write`).
        self.sql: OrdersSql = store.sql.orders
        self._wall_clock = wall_clock

    def now_ms(self) -> int:
        """The wall clock in Unix milliseconds (what the facade stamps rows with)."""
        return int(self._wall_clock() * 1000)

    async def run_write(self, fn: Callable[[Any], T], action: str) -> T:
        """Run ``fn(conn)`` in one CRITICAL write transaction (rolled back if it raises)."""
        return await self._store.write(fn, durability=Durability.CRITICAL, action=action)

    async def run_read(self, fn: Callable[[Any], T], action: str) -> T:
        """Run ``fn(conn)`` in one read transaction (a consistent snapshot)."""
        return await self._store.read(fn, action=action)

    # ------------------------------------------------------------------ writes

    async def record_intents(
        self, records: Sequence[IntentRecord], *, sending: Collection[str] = ()
    ) -> tuple[builtins.list[IntentRecord], dict[str, IntentRecord]]:
        """Record what is new, return what was stored before; see
        :func:`~daemon.store.orders_outbox.record_intents`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: self.sql.record_intents(conn, records, now, sending=sending),
            "recording order intents",
        )

    async def insert_intents(self, records: Sequence[IntentRecord]) -> builtins.list[IntentRecord]:
        """Record new PENDING intents (all or nothing); see
        :func:`~daemon.store.orders_outbox.insert_intents`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: self.sql.insert_intents(conn, records, now), "recording order intents"
        )

    async def apply_transition(
        self, client_order_id: str, t: Transition, **fields: Unpack[ReportFields]
    ) -> IntentRecord:
        """One state change with its history row; see
        :func:`~daemon.store.orders_transitions.apply_transition`."""
        return await self.apply_transitions(client_order_id, (t,), **fields)

    async def apply_transitions(
        self, client_order_id: str, ts: Sequence[Transition], **fields: Unpack[ReportFields]
    ) -> IntentRecord:
        """Several consecutive steps in one transaction, the fields with the last;
        see :func:`~daemon.store.orders_transitions.apply_transitions`."""
        now = self.now_ms()
        steps = tuple(ts)
        path = " -> ".join([steps[0].source.value, *(t.target.value for t in steps)]) if ts else "-"
        return await self.run_write(
            lambda conn: self.sql.apply_transitions(conn, client_order_id, steps, now, **fields),
            f"moving order {client_order_id} {path}",
        )

    async def apply_changes(
        self,
        client_order_id: str,
        ts: Sequence[Transition],
        *,
        fills: Sequence[FillRecord] = (),
        **fields: Unpack[ReportFields],
    ) -> IntentRecord:
        """What one venue report says, in one transaction: fills, steps, fields.

        The fills are stored first (idempotently, moving positions), then the
        steps and fields are applied as by :meth:`apply_transitions` (``ts`` may
        be empty: old news that still brings fills or quantities). Either all of
        it commits or nothing does, so a report is never half-recorded.
        """
        now = self.now_ms()
        steps = tuple(ts)
        rows = tuple(fills)

        sql = self.sql

        def fn(conn: Any) -> IntentRecord:
            sql.insert_fills(conn, rows, now)
            return sql.apply_transitions(conn, client_order_id, steps, now, **fields)

        return await self.run_write(fn, f"recording a venue report for order {client_order_id}")

    async def update_progress(
        self, client_order_id: str, **fields: Unpack[ProgressFields]
    ) -> IntentRecord:
        """Same-state news (fills so far, venue id); see
        :func:`~daemon.store.orders_transitions.update_progress`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: self.sql.update_progress(conn, client_order_id, now, **fields),
            f"updating order {client_order_id}",
        )

    async def request_cancel(self, client_order_id: str) -> IntentRecord:
        """Durably mark a cancel request; see
        :func:`~daemon.store.orders_transitions.request_cancel`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: self.sql.request_cancel(conn, client_order_id, now),
            f"requesting cancel of order {client_order_id}",
        )

    async def cancel_unsent(self, client_order_id: str, t: Transition) -> IntentRecord:
        """Cancel a PENDING intent locally, with its cancel mark; see
        :func:`~daemon.store.orders_transitions.cancel_unsent`."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: self.sql.cancel_unsent(conn, client_order_id, t, now),
            f"canceling unsent order {client_order_id}",
        )

    async def insert_fills(self, fills: Sequence[FillRecord]) -> builtins.list[FillRecord]:
        """Store fills idempotently and move positions; returns the new ones."""
        now = self.now_ms()
        return await self.run_write(
            lambda conn: self.sql.insert_fills(conn, fills, now), "storing fills"
        )

    async def save_trading_state(self, scope: str, state: str | TradingState, reason: str) -> None:
        """Store an operator's switch; see
        :func:`~daemon.store.trading_states.save_trading_state`."""
        now = self.now_ms()
        await self.run_write(
            lambda conn: self.sql.save_trading_state(conn, scope, state, reason, now),
            f"saving trading state of {scope}",
        )

    # ------------------------------------------------------------------ reads

    async def get(self, client_order_id: str) -> IntentRecord | None:
        """One intent, or ``None``."""
        return await self.run_read(
            lambda conn: self.sql.get_intent(conn, client_order_id), "reading an order intent"
        )

    async def load(self, client_order_ids: Sequence[str]) -> dict[str, IntentRecord]:
        """The stored intents among ``client_order_ids``, by id."""
        return await self.run_read(
            lambda conn: self.sql.load_intents(conn, client_order_ids), "reading order intents"
        )

    async def non_terminal(self) -> builtins.list[IntentRecord]:
        """Unfinished intents in submission order."""
        return await self.run_read(self.sql.non_terminal, "listing unfinished order intents")

    async def history(self, client_order_id: str) -> builtins.list[HistoryRow]:
        """The intent's state changes, oldest first."""
        return await self.run_read(
            lambda conn: self.sql.history(conn, client_order_id), "reading order history"
        )

    async def fills_for(self, client_order_id: str) -> builtins.list[FillRecord]:
        """The intent's fills, oldest first."""
        return await self.run_read(
            lambda conn: self.sql.fills_for(conn, client_order_id), "reading order fills"
        )

    async def filled_of_unfinished(self) -> dict[str, Decimal]:
        """Stored fill quantity of each unfinished intent with fills (start-up's risk book)."""
        return await self.run_read(
            self.sql.filled_of_unfinished, "summing fills of unfinished intents"
        )

    async def positions(self, account: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Signed positions by ``(account, symbol)``."""
        return await self.run_read(
            lambda conn: self.sql.positions(conn, account), "reading positions"
        )

    async def find_by_venue_order_id(self, venue: str, venue_order_id: int) -> IntentRecord | None:
        """The intent the venue knows by ``venue_order_id``, or ``None``."""
        return await self.run_read(
            lambda conn: self.sql.find_by_venue_order_id(conn, venue, venue_order_id),
            "finding an order by venue order id",
        )

    async def load_trading_states(self) -> builtins.list[tuple[str, str, str, int]]:
        """Every stored switch as ``(scope, state, reason, changed_at_ms)``."""
        return await self.run_read(self.sql.load_trading_states, "reading trading states")

    async def counts_by_state(self) -> dict[str, int]:
        """Intents per state (zeros included)."""
        return await self.run_read(self.sql.counts_by_state, "counting order intents")

    async def list(
        self,
        *,
        account: str | None = None,
        states: Collection[OrderState] | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> builtins.list[IntentRecord]:
        """Intents newest first; see :func:`~daemon.store.orders_queries.list_intents`."""
        return await self.run_read(
            lambda conn: self.sql.list_intents(
                conn, account=account, states=states, limit=limit, before_seq=before_seq
            ),
            "listing order intents",
        )
