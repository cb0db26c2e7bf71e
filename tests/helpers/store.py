"""Builders of the store tests: a wall clock, trades, snapshots, dead letters, a store."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from daemon.model.marketdata import Trade
from daemon.resilience import DeadLetter
from daemon.store import BookSnapshotRecord, SqliteStore, inline_runner
from tests.helpers.clock import FakeClock

VENUE = "binance"
SYMBOL = "BTCUSDT"
#: Wall clock of every test store: 2023-11-14T22:13:20Z.
EPOCH_S = 1_700_000_000.0


class WallClock(FakeClock):
    """A settable wall clock (epoch seconds), at :data:`EPOCH_S` unless told otherwise."""

    def __init__(self, now: float = EPOCH_S) -> None:
        super().__init__(now)

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


def trade(
    trade_id: int,
    *,
    symbol: str = SYMBOL,
    venue: str = VENUE,
    price: str = "100.10",
    quantity: str = "0.00100000",
    time_ms: int | None = None,
) -> Trade:
    return Trade(
        venue=venue,
        symbol=symbol,
        trade_id=trade_id,
        price=Decimal(price),
        quantity=Decimal(quantity),
        quote_quantity=Decimal(price) * Decimal(quantity),
        buyer_is_maker=trade_id % 2 == 0,
        trade_time_ms=1_000_000 + trade_id if time_ms is None else time_ms,
        event_time_ms=None if trade_id % 3 == 0 else 2_000_000 + trade_id,
    )


def snapshot(
    server_time_ms: int,
    sequence_id: int = 1,
    *,
    levels: int = 2,
    symbol: str = SYMBOL,
    venue: str = VENUE,
    price_shift: str = "0",
) -> BookSnapshotRecord:
    shift = Decimal(price_shift)
    return BookSnapshotRecord(
        venue=venue,
        symbol=symbol,
        server_time_ms=server_time_ms,
        sequence_id=sequence_id,
        bids=tuple((Decimal(100 - i) + shift, Decimal("1.5") + i) for i in range(levels)),
        asks=tuple((Decimal(101 + i) + shift, Decimal("0.25") * (i + 1)) for i in range(levels)),
    )


async def open_store(path: Path, **kwargs: Any) -> SqliteStore:
    """A store on ``path`` with the inline runner and a fixed wall clock."""
    kwargs.setdefault("runner", inline_runner)
    kwargs.setdefault("wall_clock", WallClock())
    return await SqliteStore.open(path, **kwargs)


def raw(path: Path) -> sqlite3.Connection:
    """A plain second connection to the same file (autocommit)."""
    return sqlite3.connect(path, isolation_level=None, timeout=0)


async def page_count(store: SqliteStore) -> int:
    return int(await store.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0]))


def letter(source: str = "intents", key: str | None = None, at: float = 1000.0) -> DeadLetter:
    """A dead letter of ``source`` (a permanently rejected intent), failed at ``at``."""
    return DeadLetter(
        source=source,
        payload={"symbol": "BTCUSDT", "qty": "0.1"},
        error_type="daemon.errors.PermanentError",
        error_message="rejected",
        attempts=1,
        first_failed_at=at,
        last_failed_at=at,
        key=key,
    )
