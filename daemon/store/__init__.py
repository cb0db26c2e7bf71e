"""The store: the single owner of tradingd's database (docs/ARCHITECTURE.md §6).

Layers, from the outside in::

    SqliteStore (sqlite.py)         the owner: one connection, one thread lane, WAL,
    │                               durability per transaction, error translation,
    │                               health and counters
    ├── .market  MarketDataStore    the facade (marketdata.py) over: trades
    │                               (marketdata_trades.py), book snapshots + levels
    │                               (marketdata_books.py), ingest checkpoints and
    │                               gaps (marketdata_gaps.py); chunked idempotent
    │                               writes (marketdata_chunks.py); shared values
    │                               (marketdata_values.py)
    ├── .dead_letters               the durable DeadLetterStore
    │            (deadletters.py)
    ├── OrderStore (orders.py)      the facade, built by the orders service, over:
    │                               the outbox (orders_outbox.py), transitions
    │                               (orders_transitions.py), fills and positions
    │                               (orders_fills.py), queries (orders_queries.py),
    │                               trading switches (trading_states.py); rows
    │                               (orders_rows.py), rules (orders_rules.py)
    ├── migrations.py               versioned schema, applied at open
    ├── maintenance.py              retention pruning, integrity check
    ├── rows.py                     rows <-> attrs records (columns declared once)
    └── errors.py                   StoreError tree (transient / permanent)

All SQL of tradingd lives in this package, one module per concern. The
table modules depend on the owner interface
:class:`~daemon.store.base.StoreOwner` (run a write transaction, run a read,
the wall clock), never on :class:`SqliteStore`. What a second backend would
share as it is holds no SQL: ``rows.py``, ``orders_rules.py``,
``marketdata_values.py``, ``marketdata_chunks.py``. The order modules are
imported from their own modules (they store the order values of
:mod:`daemon.orders`, so this package does not re-export them); the errors
are re-exported as :mod:`daemon.store.errors` lists them.

Typical use::

    async with await SqliteStore.open(path, synchronous_market="NORMAL") as store:
        health.add_check("store", store.check)
        summary = await store.market.insert_trades(batch, checkpoint=(venue, symbol, "trades"))
"""

from __future__ import annotations

from daemon.store import errors
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
from daemon.store.errors import *  # noqa: F403 -- the StoreError tree, listed once: errors.__all__
from daemon.store.maintenance import PruneSummary, integrity_check, prune_market_data, run_retention
from daemon.store.marketdata import MarketDataStore
from daemon.store.marketdata_values import (
    DEFAULT_CHUNK_SIZE,
    GAP_TRANSITIONS,
    BookSnapshotRecord,
    Checkpoint,
    ChunkFailure,
    Gap,
    GapState,
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
    "MarketDataStore",
    "Migration",
    "OnConflict",
    "PruneSummary",
    "Runner",
    "SqliteDeadLetterStore",
    "SqliteStore",
    "StoreHealth",
    "StoreOwner",
    "StoreStats",
    "TableStats",
    "WriteSummary",
    "inline_runner",
    "integrity_check",
    "lane_runner",
    "prune_market_data",
    "run_retention",
]
__all__ += errors.__all__
