"""The store: the single owner of tradingd's database (docs/ARCHITECTURE.md §6).

Layers, from the outside in::

    SqliteStore (sqlite.py)         the owner: one connection, one thread lane, WAL,
    │                               durability per transaction, error translation,
    │                               health and counters
    ├── .market  MarketDataStore    trades, book snapshots + levels, ingest
    │            (marketdata.py)    checkpoints, gaps; chunked idempotent writes
    ├── .dead_letters               the durable DeadLetterStore
    │            (deadletters.py)
    ├── OrderStore (orders.py)      intents (the outbox), history, fills, positions,
    │                               trading switches; built by the orders service
    ├── migrations.py               versioned schema, applied at open
    ├── maintenance.py              retention pruning, integrity check
    └── errors.py                   StoreError tree (transient / permanent)

All SQL of tradingd lives in this package. The table modules depend on the
owner interface :class:`~daemon.store.base.StoreOwner` (run a write
transaction, run a read, the wall clock), never on :class:`SqliteStore`.
:mod:`daemon.store.orders` is imported from its own module (it stores the
order values of :mod:`daemon.orders`, so this package does not re-export it).

Typical use::

    async with await SqliteStore.open(path, synchronous_market="NORMAL") as store:
        health.add_check("store", store.check)
        summary = await store.market.insert_trades(batch, checkpoint=(venue, symbol, "trades"))
"""

from __future__ import annotations

from daemon.store.base import (
    Durability,
    Runner,
    StoreHealth,
    StoreOwner,
    StoreStats,
    TableStats,
    inline_runner,
    lane_runner,
)
from daemon.store.deadletters import SqliteDeadLetterStore
from daemon.store.errors import (
    GapTransitionError,
    StoreBusyError,
    StoreClosedError,
    StoreCorruptError,
    StoreDataError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreMigrationError,
    StoreOpenError,
    StoreReadOnlyError,
    StoreUnavailableError,
    StoreVersionError,
)
from daemon.store.maintenance import PruneSummary, integrity_check, prune_market_data, run_retention
from daemon.store.marketdata import (
    DEFAULT_CHUNK_SIZE,
    GAP_TRANSITIONS,
    BookSnapshotRecord,
    Checkpoint,
    ChunkFailure,
    Gap,
    GapState,
    MarketDataStore,
    OnConflict,
    WriteSummary,
)
from daemon.store.migrations import LATEST_VERSION, MIGRATIONS, Migration
from daemon.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GAP_TRANSITIONS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "BookSnapshotRecord",
    "Checkpoint",
    "ChunkFailure",
    "Durability",
    "Gap",
    "GapState",
    "GapTransitionError",
    "MarketDataStore",
    "Migration",
    "OnConflict",
    "PruneSummary",
    "Runner",
    "SqliteDeadLetterStore",
    "SqliteStore",
    "StoreBusyError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreDataError",
    "StoreError",
    "StoreFullError",
    "StoreHealth",
    "StoreIOError",
    "StoreMigrationError",
    "StoreOpenError",
    "StoreOwner",
    "StoreReadOnlyError",
    "StoreStats",
    "StoreUnavailableError",
    "StoreVersionError",
    "TableStats",
    "WriteSummary",
    "inline_runner",
    "integrity_check",
    "lane_runner",
    "prune_market_data",
    "run_retention",
]
