"""What a backend's table modules offer the facades: one function set per concern.

The facades (:class:`~daemon.store.orders.OrderStore`,
:class:`~daemon.store.marketdata.MarketDataStore`, the durable dead letters,
retention) hold no SQL. Each owner says which function set runs on its
connection (:attr:`~daemon.store.base.StoreOwner.sql`, a :class:`Dialect`),
and the facade passes those functions to the owner's ``write``/``read``:

* SQLite: :mod:`daemon.store.sqlite_dialect` over ``orders_*.py``,
  ``marketdata_*.py``, ``trading_states.py``, ``deadletters_sqlite.py`` and
  the pruning batches of ``maintenance.py``;
* PostgreSQL: :mod:`daemon.store.pg_dialect` over the ``pg_*.py`` modules.

The protocols below declare each function once. Their ``conn`` is typed
``Any`` here because a facade never touches it: it only hands the function
to the owner that made the connection. The functions themselves are typed
with their backend's connection (``sqlite3.Connection``,
``psycopg.Connection``).

Backend-neutral: no SQL and no driver import here (``tests/store/test_seams.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from decimal import Decimal
from typing import Any, Protocol, Unpack

import attrs

from daemon.model.marketdata import Trade
from daemon.orders.records import FillRecord, HistoryRow, IntentRecord
from daemon.orders.state import OrderState, Transition
from daemon.resilience.deadletter import DeadLetter
from daemon.risk.state import TradingState
from daemon.store.lease_rules import Claim, Fence, LeaseGrant, LeaseRow
from daemon.store.marketdata_values import (
    BookSnapshotRecord,
    Checkpoint,
    ChunkResult,
    Gap,
    GapState,
    OnConflict,
)
from daemon.store.orders_rules import ProgressFields, ReportFields

__all__ = ["DeadLetterSql", "Dialect", "LeasesSql", "MarketSql", "OrdersSql", "PruneSql"]

#: A gap's identity: ``(venue, symbol, stream, from_id, to_id)``.
GapKey = tuple[str, str, str, int, int]


class OrdersSql(Protocol):
    """The order tables (see :mod:`daemon.store.orders` for the rules they keep)."""

    def record_intents(
        self,
        conn: Any,
        records: Sequence[IntentRecord],
        now_ms: int,
        *,
        sending: Collection[str] = (),
    ) -> tuple[list[IntentRecord], dict[str, IntentRecord]]: ...

    def insert_intents(
        self, conn: Any, records: Sequence[IntentRecord], now_ms: int
    ) -> list[IntentRecord]: ...

    def apply_transitions(
        self,
        conn: Any,
        client_order_id: str,
        ts: Sequence[Transition],
        now_ms: int,
        *,
        fence: Fence | None = None,
        **fields: Unpack[ReportFields],
    ) -> IntentRecord: ...

    def update_progress(
        self,
        conn: Any,
        client_order_id: str,
        now_ms: int,
        *,
        fence: Fence | None = None,
        **fields: Unpack[ProgressFields],
    ) -> IntentRecord: ...

    def request_cancel(
        self, conn: Any, client_order_id: str, now_ms: int, *, fence: Fence | None = None
    ) -> IntentRecord: ...

    def cancel_unsent(
        self,
        conn: Any,
        client_order_id: str,
        t: Transition,
        now_ms: int,
        *,
        fence: Fence | None = None,
    ) -> IntentRecord: ...

    def insert_fills(
        self, conn: Any, fills: Sequence[FillRecord], now_ms: int
    ) -> list[FillRecord]: ...

    def save_trading_state(
        self, conn: Any, scope: str, state: str | TradingState, reason: str, now_ms: int
    ) -> None: ...

    def get_intent(self, conn: Any, client_order_id: str) -> IntentRecord | None: ...

    def load_intents(
        self, conn: Any, client_order_ids: Sequence[str]
    ) -> dict[str, IntentRecord]: ...

    def non_terminal(self, conn: Any) -> list[IntentRecord]: ...

    def history(self, conn: Any, client_order_id: str) -> list[HistoryRow]: ...

    def fills_for(self, conn: Any, client_order_id: str) -> list[FillRecord]: ...

    def filled_of_unfinished(self, conn: Any) -> dict[str, Decimal]: ...

    def positions(
        self, conn: Any, account: str | None = None
    ) -> dict[tuple[str, str], Decimal]: ...

    def find_by_venue_order_id(
        self, conn: Any, venue: str, venue_order_id: int
    ) -> IntentRecord | None: ...

    def load_trading_states(self, conn: Any) -> list[tuple[str, str, str, int]]: ...

    def counts_by_state(self, conn: Any) -> dict[str, int]: ...

    def list_intents(
        self,
        conn: Any,
        *,
        account: str | None = None,
        states: Collection[OrderState] | None = None,
        limit: int = 100,
        before_seq: int | None = None,
    ) -> list[IntentRecord]: ...


class MarketSql(Protocol):
    """Trades, book snapshots, ingest checkpoints and gaps (see :mod:`daemon.store.marketdata`)."""

    def write_trades(
        self,
        conn: Any,
        trades: Sequence[Trade],
        *,
        on_conflict: OnConflict,
        checkpoint: tuple[str, str, str] | None,
        wall_clock: Callable[[], float],
    ) -> ChunkResult: ...

    def last_trade_id(self, conn: Any, venue: str, symbol: str) -> int | None: ...

    def count_trades(
        self, conn: Any, venue: str, symbol: str, from_id: int | None, to_id: int | None
    ) -> int: ...

    def trade_ids(
        self, conn: Any, venue: str, symbol: str, from_id: int, to_id: int
    ) -> list[int]: ...

    def read_trades(
        self,
        conn: Any,
        venue: str,
        symbol: str,
        from_id: int | None,
        to_id: int | None,
        *,
        limit: int | None,
    ) -> list[Trade]: ...

    def missing_ranges(
        self, conn: Any, *, venue: str, symbol: str, lo: int, hi: int, limit: int | None
    ) -> list[tuple[int, int]]: ...

    def write_snapshots(
        self,
        conn: Any,
        snapshots: Sequence[BookSnapshotRecord],
        *,
        on_conflict: OnConflict,
        wall_clock: Callable[[], float],
    ) -> ChunkResult: ...

    def read_snapshots(
        self,
        conn: Any,
        *,
        venue: str,
        symbol: str,
        from_ms: int | None,
        to_ms: int | None,
        limit: int | None,
        newest_first: bool,
    ) -> list[BookSnapshotRecord]: ...

    def count_levels(self, conn: Any) -> int: ...

    def read_checkpoint(self, conn: Any, key: tuple[str, str, str]) -> Checkpoint | None: ...

    def read_checkpoints(self, conn: Any) -> list[Checkpoint]: ...

    def move_checkpoint(
        self, conn: Any, key: tuple[str, str, str], last_id: int, now_ms: int
    ) -> Checkpoint: ...

    def record_gap(self, conn: Any, *, key: GapKey, detected_at_ms: int, reason: str) -> Gap: ...

    def record_resolved_gap(
        self,
        conn: Any,
        *,
        key: GapKey,
        state: GapState,
        reason: str,
        resolution: str | None,
        at_ms: int,
        path: str,
    ) -> Gap: ...

    def resolve_gap(
        self,
        conn: Any,
        *,
        gap_id: int,
        state: GapState,
        resolution: str | None,
        resolved_at_ms: int,
        path: str,
    ) -> Gap | None: ...

    def list_gaps(
        self,
        conn: Any,
        *,
        venue: str | None,
        symbol: str | None,
        stream: str | None,
        state: GapState | None,
    ) -> list[Gap]: ...

    def count_gaps(self, conn: Any) -> dict[GapState, int]: ...


class DeadLetterSql(Protocol):
    """The ``dead_letters`` table (see :mod:`daemon.store.deadletters` for the semantics)."""

    def add_letter(self, conn: Any, letter: DeadLetter) -> DeadLetter: ...

    def list_letters(
        self, conn: Any, *, source: str | None, after_id: int, limit: int
    ) -> list[DeadLetter]: ...

    def get_letter(self, conn: Any, letter_id: int) -> DeadLetter | None: ...

    def count_letters(self, conn: Any, source: str | None) -> int: ...

    def record_failed_replay(
        self, conn: Any, letter_id: int, error_type: str, error_message: str, at: float
    ) -> DeadLetter | None: ...

    def remove_letter(self, conn: Any, letter_id: int) -> None: ...

    def purge_letters(
        self,
        conn: Any,
        *,
        keep: Collection[int],
        letter_ids: Collection[int] | None,
        source: str | None,
        failed_before: float | None,
    ) -> int: ...


class PruneSql(Protocol):
    """Retention's batches (see :mod:`daemon.store.maintenance`)."""

    def pairs(self, conn: Any, table: str) -> list[tuple[str, str]]: ...

    def prune_trades_batch(
        self, conn: Any, venue: str, symbol: str, older_than_ms: int, batch_rows: int
    ) -> tuple[int, bool]: ...

    def prune_snapshots_batch(
        self, conn: Any, venue: str, symbol: str, older_than_ms: int, batch_rows: int
    ) -> tuple[int, int, bool]: ...


class LeasesSql(Protocol):
    """Account leases (see :mod:`daemon.store.lease_rules` for the rules they keep)."""

    def claim(
        self,
        conn: Any,
        accounts: Iterable[str],
        *,
        owner: str,
        holder: str,
        ttl_ms: int,
        claim: Claim,
        now_ms: int | None = None,
    ) -> list[LeaseGrant]: ...

    def release(
        self,
        conn: Any,
        accounts: Iterable[str],
        *,
        owner: str,
        holder: str,
        now_ms: int | None = None,
    ) -> list[str]: ...

    def read_leases(self, conn: Any, now_ms: int | None = None) -> tuple[int, list[LeaseRow]]: ...

    def check_fence(self, conn: Any, account: str, owner: str, token: int | None) -> None: ...


@attrs.frozen
class Dialect:
    """One backend's function sets, by concern (an owner's ``sql``).

    Attributes:
        name: ``"sqlite"`` or ``"postgres"`` (status, logs, tests).
    """

    name: str
    orders: OrdersSql
    market: MarketSql
    dead_letters: DeadLetterSql
    prune: PruneSql
    leases: LeasesSql
