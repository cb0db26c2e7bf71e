"""The ingest bench's store phase: tradingd's chunked trade write against raw ``executemany``.

In the bench process, with nothing else running, each side writes the same
``store_rows`` trades into a fresh database file whose schema tradingd's
migrations made, at the same ``synchronous`` level (``[store]
synchronous_market``'s default) and chunk size (``[marketdata] chunk_size``'s
default), alternating for ``store_rounds`` rounds so that drift hits both
(each side's rate is over its median round):

* **tradingd** — :meth:`~daemon.store.MarketDataStore.insert_trades` of
  :class:`~daemon.model.marketdata.Trade` values, one call per chunk with
  the ingest checkpoint, as the daemon's ingest writer makes it: one
  transaction per chunk on the store's owner thread (rows built from the
  trades, the INSERT, the checkpoint advanced, the commit at
  ``synchronous_market``), a thread hop per chunk;
* **raw** — ``BEGIN IMMEDIATE``; ``executemany`` of the same rows as
  ready-made tuples; ``COMMIT`` per chunk, all in one worker-thread call,
  on a plain :mod:`sqlite3` connection with the connection settings
  tradingd's store uses (WAL, page cache, autocheckpoint, journal limit,
  ``synchronous``): what SQLite itself costs for these rows.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

import trio

from daemon.bench.common import BenchError, ratio, self_cpu_s
from daemon.bench.ingest_setup import CHECKPOINT_STREAM, SYMBOL, VENUE, IngestOptions
from daemon.config import MarketDataConfig, StoreConfig
from daemon.model.marketdata import Trade
from daemon.store import SqliteStore
from daemon.store.sqlite import (
    DEFAULT_CACHE_SIZE_KIB,
    DEFAULT_JOURNAL_SIZE_LIMIT_BYTES,
    DEFAULT_WAL_AUTOCHECKPOINT_PAGES,
)

__all__ = ["TARGET_RATIO", "bench_trades", "raw_rows", "side_summary", "store_phase"]

TARGET_RATIO: Final = 0.8
_COLUMNS: Final = (
    "venue, symbol, trade_id, price, quantity, quote_quantity, buyer_is_maker, "
    "trade_time_ms, event_time_ms, ingested_at_ms"
)
_INSERT: Final = f"INSERT INTO trades ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Epoch ms of the first bench trade (any fixed time will do).
_T0_MS: Final = 1_700_000_000_000

Row = tuple[str, str, int, str, str, str, int, int, int | None, int]
Synchronous = Literal["NORMAL", "FULL"]


def bench_trades(count: int) -> list[Trade]:
    """``count`` BTCUSDT trades as the stream decodes them (8-decimal prices, ids from 1)."""
    prices = [Decimal(f"{30000 + 0.01 * k:.8f}") for k in range(-10, 11)]
    qtys = [Decimal(f"{0.001 * k:.8f}") for k in range(1, 11)]
    quotes = [[p * q for q in qtys] for p in prices]
    trades = []
    for i in range(count):
        p, q = (i * 7) % len(prices), (i * 3) % len(qtys)
        t = _T0_MS + i // 10
        trades.append(
            Trade(
                venue=VENUE,
                symbol=SYMBOL,
                trade_id=i + 1,
                price=prices[p],
                quantity=qtys[q],
                quote_quantity=quotes[p][q],
                buyer_is_maker=bool(i & 1),
                trade_time_ms=t,
                event_time_ms=t,
            )
        )
    return trades


def raw_rows(trades: list[Trade], now_ms: int) -> list[Row]:
    """The rows tradingd stores for ``trades`` (the raw side inserts exactly these)."""
    return [
        (t.venue, t.symbol, t.trade_id, str(t.price), str(t.quantity), str(t.quote_quantity),
         1 if t.buyer_is_maker else 0, t.trade_time_ms, t.event_time_ms, now_ms)
        for t in trades
    ]  # fmt: skip


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])
    finally:
        conn.close()


def _raw_write(path: Path, rows: list[Row], chunk: int, synchronous: Synchronous) -> float:
    """Insert ``rows`` chunk by chunk on a plain connection; the seconds it took."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in (
            f"PRAGMA cache_size = -{DEFAULT_CACHE_SIZE_KIB}",
            f"PRAGMA wal_autocheckpoint = {DEFAULT_WAL_AUTOCHECKPOINT_PAGES}",
            f"PRAGMA journal_size_limit = {DEFAULT_JOURNAL_SIZE_LIMIT_BYTES}",
            f"PRAGMA synchronous = {synchronous}",
        ):
            conn.execute(pragma)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BenchError(f"{path}: journal_mode is {mode}, not wal")
        started = time.perf_counter()
        for start in range(0, len(rows), chunk):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows[start : start + chunk])
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def _raw_round(
    path: Path, rows: list[Row], chunk: int, synchronous: Synchronous
) -> dict[str, Any]:
    store = await SqliteStore.open(path, synchronous_market=synchronous)  # the schema
    await store.aclose()
    cpu = sum(self_cpu_s())
    seconds = await trio.to_thread.run_sync(_raw_write, path, rows, chunk, synchronous)
    cpu = sum(self_cpu_s()) - cpu
    return {"seconds": seconds, "cpu_s": cpu, "stored": await trio.to_thread.run_sync(_count, path)}


async def _tradingd_round(
    path: Path, trades: list[Trade], chunk: int, synchronous: Synchronous
) -> dict[str, Any]:
    store = await SqliteStore.open(path, synchronous_market=synchronous)
    try:
        checkpoint = (VENUE, SYMBOL, CHECKPOINT_STREAM)
        inserted = 0
        cpu = sum(self_cpu_s())
        started = time.perf_counter()
        for start in range(0, len(trades), chunk):
            summary = await store.market.insert_trades(
                trades[start : start + chunk], chunk_size=chunk, checkpoint=checkpoint
            )
            inserted += summary.inserted
        seconds = time.perf_counter() - started
        cpu = sum(self_cpu_s()) - cpu
    finally:
        await store.aclose()
    if inserted != len(trades):
        raise BenchError(f"tradingd's store inserted {inserted} of {len(trades)} trades")
    return {"seconds": seconds, "cpu_s": cpu, "stored": await trio.to_thread.run_sync(_count, path)}


def side_summary(rounds: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """One side's rate over its median round (one round slowed by other work on the
    machine does not decide the ratio), and its CPU per row over all rounds."""
    seconds = statistics.median(r["seconds"] for r in rounds)
    cpu = sum(r["cpu_s"] for r in rounds)
    total = rows * len(rounds)
    return {
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        "seconds": [round(r["seconds"], 4) for r in rounds],
        "cpu_us_per_row": round(cpu / total * 1e6, 3),
        "stored": [r["stored"] for r in rounds],
    }


async def store_phase(options: IngestOptions, workdir: Path) -> dict[str, Any]:
    """Both sides, alternating, ``store_rounds`` rounds of ``store_rows`` rows each."""
    chunk = MarketDataConfig().chunk_size
    synchronous = StoreConfig().synchronous_market
    trades = bench_trades(options.store_rows)
    rows = raw_rows(trades, int(time.time() * 1000))
    raw: list[dict[str, Any]] = []
    tradingd: list[dict[str, Any]] = []
    for round_no in range(options.store_rounds):
        raw.append(await _raw_round(workdir / f"store-raw-{round_no}.db", rows, chunk, synchronous))
        tradingd.append(
            await _tradingd_round(
                workdir / f"store-tradingd-{round_no}.db", trades, chunk, synchronous
            )
        )
    for side, results in (("raw", raw), ("tradingd", tradingd)):
        if any(r["stored"] != options.store_rows for r in results):
            raise BenchError(f"store phase, {side}: stored {[r['stored'] for r in results]}")
    raw_side, td_side = (
        side_summary(raw, options.store_rows),
        side_summary(tradingd, options.store_rows),
    )
    return {
        "rows": options.store_rows,
        "rounds": options.store_rounds,
        "chunk_size": chunk,
        "synchronous": synchronous,
        "raw": raw_side,
        "tradingd": td_side,
        "ratio": ratio(td_side["rows_per_s"], raw_side["rows_per_s"]),
        "target_ratio": TARGET_RATIO,
    }
