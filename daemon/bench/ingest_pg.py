"""``tradingd bench ingest --store postgres``: the PostgreSQL witness and store phase.

With ``--store postgres`` the daemon runs with ``[store] backend =
"postgres"`` on a fresh schema (:mod:`daemon.bench.pg`), and two parts of
the bench change:

* :class:`PgWitness` counts what is **durably committed** from the server
  with its own psycopg connection (autocommit: each statement sees the last
  commit), never through tradingd's store code — as
  :class:`~daemon.bench.ingest_setup.StoreWitness` reads SQLite's file.
  Its "file size" is the schema's size on the server (tables, indexes,
  TOAST).
* :func:`pg_store_phase` (the store phase, 3.) writes the same
  ``store_rows`` trades, chunk by chunk, three ways into one schema made
  by tradingd's migrations, emptied (``TRUNCATE``) before every side's
  round, alternating for ``store_rounds`` rounds:

  - **tradingd** — :meth:`~daemon.store.MarketDataStore.insert_trades` on a
    :class:`~daemon.store.postgres.PostgresStore`, one call per chunk with
    the ingest checkpoint, as the ingest writer calls it (binary COPY into
    the session's staging table, ``INSERT … SELECT … ORDER BY n ON CONFLICT
    DO NOTHING``, the checkpoint upsert, ``COMMIT``; a thread hop per chunk);
  - **raw COPY** (the baseline of the ratio) — the same technique by hand
    on a plain psycopg connection: per chunk ``BEGIN``; binary ``COPY`` of
    the ready-made row tuples into a temporary table; ``INSERT … SELECT …
    ON CONFLICT DO NOTHING``; ``COMMIT``, all in one worker-thread call;
  - **raw executemany** (a second reference) — per chunk ``BEGIN``;
    ``executemany`` of ``INSERT … ON CONFLICT DO NOTHING`` (psycopg
    pipelines it); ``COMMIT``.

  Every side commits with the ``synchronous_commit`` tradingd's store uses
  for market data (``SET LOCAL synchronous_commit = off`` for the default
  ``synchronous_market = "NORMAL"``, ``on`` for ``"FULL"``). Beside each
  side's rate (over its median round) and the bench process's CPU per row,
  the server backend's CPU per row when the server runs on this machine.
  Each side first writes :data:`WARM_UP_CHUNKS` chunks unmeasured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import psycopg
import trio

from daemon.bench.common import BenchError, process_cpu_s, ratio, self_cpu_s
from daemon.bench.ingest_setup import CHECKPOINT_STREAM, SYMBOL, VENUE, IngestOptions
from daemon.bench.ingest_store import TARGET_RATIO, bench_trades, side_summary
from daemon.bench.pg import PgServer
from daemon.config import MarketDataConfig, StoreConfig
from daemon.model.marketdata import Trade
from daemon.store.postgres import PostgresStore

__all__ = ["PgWitness", "pg_rows", "pg_store_phase"]

_COLUMNS: Final = (
    "venue, symbol, trade_id, price, quantity, quote_quantity, buyer_is_maker, "
    "trade_time_ms, event_time_ms, ingested_at_ms"
)
#: The raw COPY side's staging table (temporary: private to its connection).
_STAGE: Final = "bench_trades_in"
_CREATE_STAGE: Final = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (venue TEXT, symbol TEXT, "
    "trade_id BIGINT, price TEXT, quantity TEXT, quote_quantity TEXT, buyer_is_maker BOOLEAN, "
    "trade_time_ms BIGINT, event_time_ms BIGINT, ingested_at_ms BIGINT) ON COMMIT DELETE ROWS"
)
_COPY: Final = f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES: Final = (
    "text", "text", "int8", "text", "text", "text", "bool", "int8", "int8", "int8",
)  # fmt: skip
_MOVE: Final = (
    f"INSERT INTO trades ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGE} "
    "ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_INSERT: Final = (
    f"INSERT INTO trades ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (venue, symbol, trade_id) DO NOTHING"
)
_RANGE: Final = "venue = %s AND symbol = %s AND trade_id BETWEEN %s AND %s"
_LOCAL_HOSTS: Final = ("", "localhost", "127.0.0.1", "::1")
#: Unmeasured chunks each side writes first (psycopg prepares a statement on its 5th run).
WARM_UP_CHUNKS: Final = 6

PgRow = tuple[str, str, int, str, str, str, bool, int, int | None, int]


def pg_rows(trades: Sequence[Trade], now_ms: int) -> list[PgRow]:
    """The rows tradingd stores on PostgreSQL for ``trades`` (the raw sides insert these)."""
    return [
        (t.venue, t.symbol, t.trade_id, str(t.price), str(t.quantity), str(t.quote_quantity),
         t.buyer_is_maker, t.trade_time_ms, t.event_time_ms, now_ms)
        for t in trades
    ]  # fmt: skip


def backend_cpu_s(conn: psycopg.Connection[Any]) -> float | None:
    """CPU seconds of ``conn``'s server backend so far, when the server runs on this machine."""
    host = conn.info.host or ""
    if host not in _LOCAL_HOSTS and not host.startswith("/"):
        return None
    pid = conn.info.backend_pid
    try:
        if Path(f"/proc/{pid}/comm").read_text(encoding="ascii").strip() != "postgres":
            return None
    except OSError:
        return None
    return process_cpu_s(pid)


# ------------------------------------------------------------------ the witness


class PgWitness:
    """The daemon's trades, read from the server with a connection of the bench's own.

    The same questions as :class:`~daemon.bench.ingest_setup.StoreWitness`;
    one connection (autocommit), used from one worker thread at a time.
    """

    def __init__(self, server: PgServer, dsn: str) -> None:
        self.server = server
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        #: The store's cache is the server's, not in the daemon's memory.
        self.page_cache_max_mb: float | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            self._conn = self.server.connect(self.dsn, autocommit=True)
        return self._conn

    def _one(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
        row = self._connect().execute(sql, tuple(args)).fetchone()
        assert row is not None
        return tuple(row)

    def last_id(self, lo: int, hi: int) -> int | None:
        """The highest stored id in ``[lo, hi]`` (one index seek)."""
        (top,) = self._one(
            f"SELECT max(trade_id) FROM trades WHERE {_RANGE}", (VENUE, SYMBOL, lo, hi)
        )
        return None if top is None else int(top)

    def count(self, lo: int, hi: int) -> int:
        """How many trades in ``[lo, hi]`` are stored."""
        (n,) = self._one(f"SELECT count(*) FROM trades WHERE {_RANGE}", (VENUE, SYMBOL, lo, hi))
        return int(n)

    def holes(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges of ids in ``[lo, hi]`` not stored, inclusive, ascending."""
        args = (VENUE, SYMBOL, lo, hi)
        first, last = self._one(
            f"SELECT min(trade_id), max(trade_id) FROM trades WHERE {_RANGE}", args
        )
        if first is None:
            return [(lo, hi)]
        found: list[tuple[int, int]] = []
        if first > lo:
            found.append((lo, int(first) - 1))
        rows = self._connect().execute(
            "SELECT prev + 1, trade_id - 1 FROM (SELECT trade_id, "
            f"lag(trade_id) OVER (ORDER BY trade_id) AS prev FROM trades WHERE {_RANGE}) AS t "
            "WHERE trade_id - prev > 1 ORDER BY trade_id",
            args,
        )
        found += [(int(a), int(b)) for a, b in rows]
        if last < hi:
            found.append((int(last) + 1, hi))
        return found

    def gaps(self) -> list[dict[str, Any]]:
        """The gaps table's rows of BTCUSDT's trades."""
        rows = self._connect().execute(
            "SELECT from_id, to_id, state, reason FROM gaps WHERE venue = %s AND symbol = %s "
            "AND stream = %s ORDER BY from_id",
            (VENUE, SYMBOL, CHECKPOINT_STREAM),
        )
        return [{"from_id": a, "to_id": b, "state": s, "reason": r} for a, b, s, r in rows]

    def file_bytes(self) -> int:
        """The schema's size on the server: its tables with their indexes and TOAST."""
        (size,) = self._one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            (),
        )
        return int(size)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ------------------------------------------------------------------ the store phase


def _begin(cursor: psycopg.Cursor[Any], sync_commit: str) -> None:
    cursor.execute("BEGIN")
    cursor.execute(f"SET LOCAL synchronous_commit = {sync_commit}")


def _raw_copy(
    conn: psycopg.Connection[Any], rows: list[PgRow], chunk: int, sync_commit: str
) -> float:
    """Binary COPY + INSERT … SELECT … ON CONFLICT DO NOTHING + COMMIT per chunk; seconds."""
    with conn.cursor() as cursor:
        started = time.perf_counter()
        for start in range(0, len(rows), chunk):
            _begin(cursor, sync_commit)
            with cursor.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows[start : start + chunk]:
                    copy.write_row(row)
            cursor.execute(_MOVE)
            cursor.execute("COMMIT")
        return time.perf_counter() - started


def _raw_executemany(
    conn: psycopg.Connection[Any], rows: list[PgRow], chunk: int, sync_commit: str
) -> float:
    """``executemany`` of INSERT … ON CONFLICT DO NOTHING + COMMIT per chunk; seconds."""
    with conn.cursor() as cursor:
        started = time.perf_counter()
        for start in range(0, len(rows), chunk):
            _begin(cursor, sync_commit)
            cursor.executemany(_INSERT, rows[start : start + chunk])
            cursor.execute("COMMIT")
        return time.perf_counter() - started


def _empty(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE trades, ingest_checkpoints")


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM trades").fetchone()
    assert row is not None
    return int(row[0])


class _Phase:
    """The store phase's connections: the raw sides' (which also empties and counts), tradingd's."""

    def __init__(
        self, raw: psycopg.Connection[Any], store: PostgresStore, rows: list[PgRow], chunk: int
    ) -> None:
        self.raw = raw
        self.store = store
        self.rows = rows
        self.chunk = chunk

    async def _store_backend_cpu(self) -> float | None:
        return await self.store.call(backend_cpu_s, action="reading backend CPU")

    async def raw_round(self, write: Any, sync_commit: str) -> dict[str, Any]:
        await trio.to_thread.run_sync(_empty, self.raw)
        cpu, server = sum(self_cpu_s()), backend_cpu_s(self.raw)
        seconds = await trio.to_thread.run_sync(write, self.raw, self.rows, self.chunk, sync_commit)
        cpu, server_after = sum(self_cpu_s()) - cpu, backend_cpu_s(self.raw)
        return {
            "seconds": seconds,
            "cpu_s": cpu,
            "server_cpu_s": _delta(server, server_after),
            "stored": await trio.to_thread.run_sync(_count, self.raw),
        }

    async def warm_up(self, trades: list[Trade], sync_commit: str) -> None:
        """A few unmeasured chunks each way (connections, catalog, prepared statements)."""
        n = min(len(trades), WARM_UP_CHUNKS * self.chunk)
        rows, self.rows = self.rows, self.rows[:n]
        try:
            for write in (_raw_copy, _raw_executemany):
                await self.raw_round(write, sync_commit)
            await self.tradingd_round(trades[:n])
        finally:
            self.rows = rows

    async def tradingd_round(self, trades: list[Trade]) -> dict[str, Any]:
        await trio.to_thread.run_sync(_empty, self.raw)
        checkpoint = (VENUE, SYMBOL, CHECKPOINT_STREAM)
        inserted = 0
        chunk = self.chunk
        server = await self._store_backend_cpu()
        cpu = sum(self_cpu_s())
        started = time.perf_counter()
        for start in range(0, len(trades), chunk):
            summary = await self.store.market.insert_trades(
                trades[start : start + chunk], chunk_size=chunk, checkpoint=checkpoint
            )
            inserted += summary.inserted
        seconds = time.perf_counter() - started
        cpu = sum(self_cpu_s()) - cpu
        server_after = await self._store_backend_cpu()
        if inserted != len(trades):
            raise BenchError(f"tradingd's store inserted {inserted} of {len(trades)} trades")
        return {
            "seconds": seconds,
            "cpu_s": cpu,
            "server_cpu_s": _delta(server, server_after),
            "stored": await trio.to_thread.run_sync(_count, self.raw),
        }


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _side(rounds: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    summary = side_summary(rounds, rows)
    server = [r["server_cpu_s"] for r in rounds]
    summary["server_cpu_us_per_row"] = (
        None if None in server else round(sum(server) / (rows * len(rounds)) * 1e6, 3)
    )
    return summary


async def pg_store_phase(options: IngestOptions, server: PgServer) -> dict[str, Any]:
    """The three sides, alternating, ``store_rounds`` rounds of ``store_rows`` rows each."""
    chunk = MarketDataConfig().chunk_size
    synchronous = StoreConfig().synchronous_market
    sync_commit = "off" if synchronous == "NORMAL" else "on"
    dsn = await trio.to_thread.run_sync(server.fresh_schema, "ingest_store")
    trades = bench_trades(options.store_rows)
    rows = pg_rows(trades, int(time.time() * 1000))
    store = await PostgresStore.open(dsn, password=server.password, synchronous_market=synchronous)
    try:
        raw = await trio.to_thread.run_sync(lambda: server.connect(dsn, autocommit=True))
        try:
            await trio.to_thread.run_sync(raw.execute, _CREATE_STAGE)
            phase = _Phase(raw, store, rows, chunk)
            await phase.warm_up(trades, sync_commit)
            sides: dict[str, list[dict[str, Any]]] = {"raw": [], "executemany": [], "tradingd": []}
            for _ in range(options.store_rounds):
                sides["raw"].append(await phase.raw_round(_raw_copy, sync_commit))
                sides["executemany"].append(await phase.raw_round(_raw_executemany, sync_commit))
                sides["tradingd"].append(await phase.tradingd_round(trades))
        finally:
            await trio.to_thread.run_sync(raw.close)
    finally:
        await store.aclose()
    for side, results in sides.items():
        if any(r["stored"] != options.store_rows for r in results):
            raise BenchError(f"store phase, {side}: stored {[r['stored'] for r in results]}")
    raw_side = _side(sides["raw"], options.store_rows)
    many_side = _side(sides["executemany"], options.store_rows)
    td_side = _side(sides["tradingd"], options.store_rows)
    return {
        "backend": "postgres",
        "rows": options.store_rows,
        "rounds": options.store_rounds,
        "chunk_size": chunk,
        "synchronous": synchronous,
        "synchronous_commit": sync_commit,
        "raw": raw_side,
        "raw_executemany": many_side,
        "tradingd": td_side,
        "ratio": ratio(td_side["rows_per_s"], raw_side["rows_per_s"]),
        "ratio_to_executemany": ratio(td_side["rows_per_s"], many_side["rows_per_s"]),
        "target_ratio": TARGET_RATIO,
    }
