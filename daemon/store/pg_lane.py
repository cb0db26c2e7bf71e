"""The PostgreSQL owner's connection on its lane: connect, reconnect, transactions, close.

:class:`PgLaneConnection` holds the one :class:`psycopg.Connection` of
:class:`~daemon.store.postgres.PostgresStore` (sync psycopg 3: its async API
is asyncio-only, so the connection is owned by one worker-thread lane exactly
as SQLite's is) and builds the jobs that run on the owner's lane:

* :meth:`~PgLaneConnection.job` — one call on the connection, its errors
  translated inside the lane (:func:`~daemon.store.pg_errors.translate_pg_error`).
  A call that finds the connection lost opens a new one first (``connect``
  again: session settings, the schema check — never a migration), so after
  a server restart or a terminated backend **the next call reconnects**; the
  call that saw the loss fails with a transient
  :class:`~daemon.store.errors.StoreIOError`;
* :meth:`~PgLaneConnection.transaction` — ``BEGIN`` … ``COMMIT`` at READ
  COMMITTED (rolled back when anything raises; the server rolls back on its
  own when the connection dies, so nothing is ever half-written). A
  serialization failure or a deadlock (``40001``/``40P01``) runs the whole
  function again, up to :data:`WRITE_ATTEMPTS` times, then raises
  :class:`~daemon.store.errors.StoreBusyError`. A MARKET transaction with
  ``synchronous_market = "NORMAL"`` runs ``SET LOCAL synchronous_commit = off``:
  like SQLite's NORMAL, a server crash may lose the last such commits (about
  three ``wal_writer_delay``, 600 ms by default), never half of one, and
  capture resumes from the checkpoint committed with its trades. A CRITICAL
  commit waits for the WAL flush (``synchronous_commit`` on — forced with
  ``SET LOCAL`` when the server's default is off);
* :func:`pg_read_snapshot` — ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``:
  one consistent snapshot, rolled back after.

A COMMIT whose connection dies is ambiguous (it may have committed): the
caller gets a transient error, and every write of the store is idempotent
or compare-and-set, so doing it again is safe (the intent is found stored,
the transition is found done as a :class:`~daemon.store.orders_rules.StaleStateError`,
the chunk's rows are skipped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio
from psycopg.pq import TransactionStatus

from daemon.store.base import Durability, Runner
from daemon.store.errors import StoreBusyError, StoreClosedError
from daemon.store.pg_errors import RETRYABLE, is_connection_error, translate_pg_error

__all__ = ["CLOSE_TIMEOUT_S", "WRITE_ATTEMPTS", "PgConnect", "PgLaneConnection", "pg_read_snapshot"]

log = logging.getLogger("tradingd.store")

T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: Bound on the shielded close at shutdown.
CLOSE_TIMEOUT_S = 30.0
#: Tries of a write transaction that meets serialization failures or deadlocks.
WRITE_ATTEMPTS = 3

#: Opens a ready connection on the lane (session set up, schema checked).
PgConnect = Callable[[], Conn]


def _rollback(conn: Conn, where: str) -> None:
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        log.warning("store %s: rollback failed", where, exc_info=True)


def pg_read_snapshot(fn: Callable[[Conn], T], where: str) -> Callable[[Conn], T]:
    """``fn`` in a REPEATABLE READ, READ ONLY transaction (one snapshot), rolled back after."""

    def job(conn: Conn) -> T:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            return fn(conn)
        finally:
            _rollback(conn, where)

    return job


class PgLaneConnection:
    """The owner's one connection, used only from calls on ``runner``.

    Args:
        where: The public DSN (error texts, log lines).
        runner: The owner's lane.
        market_sync_off: MARKET commits with ``synchronous_commit = off``.
    """

    def __init__(self, where: str, runner: Runner, *, market_sync_off: bool) -> None:
        self._where = where
        self._runner = runner
        self._market_sync_off = market_sync_off
        self._connect: PgConnect | None = None
        self._conn: Conn | None = None  # touched only inside lane calls (and at open/close)
        self._open = False
        self._closing = False
        self._force_sync_on = False
        #: Connections opened again after a loss (event loop reads it for status).
        self.reconnects = 0

    @property
    def closed(self) -> bool:
        """True before :meth:`open` and once :meth:`close` has started."""
        return not self._open or self._closing

    async def open(self, connect: PgConnect) -> None:
        """Run ``connect`` on the lane and keep it for reconnects."""

        def job() -> None:
            self._set(connect())

        await self._runner(job)
        self._connect = connect
        self._open = True

    def _set(self, conn: Conn) -> None:
        # On the lane: reads the session's synchronous_commit.
        row = conn.execute("SHOW synchronous_commit").fetchone()
        self._force_sync_on = row is not None and str(row[0]) == "off"
        self._conn = conn

    def _connection(self) -> Conn:
        """The live connection, opened again when the last one was lost (lane only)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        assert self._connect is not None
        log.warning("store %s: connection lost; connecting again", self._where)
        fresh = self._connect()
        self._set(fresh)
        self.reconnects += 1
        log.info("store %s: connected again", self._where)
        return fresh

    async def close(self) -> bool:
        """Close the connection (after the lane's queued work); False when already closed."""
        if not self._open or self._closing:
            return False
        self._closing = True

        def job() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await self._runner(job)
        return True

    def job(self, fn: Callable[[Conn], T], *, action: str) -> Callable[[], T]:
        """The lane job running ``fn(conn)``, its errors translated (``action`` names it).

        Raises:
            StoreClosedError: now, when the store is closed or closing.
        """
        if not self._open or self._closing:
            raise StoreClosedError(f"store {self._where}: closed", path=self._where)
        where = self._where

        def job() -> T:
            conn: Conn | None = None
            try:
                conn = self._connection()
                return fn(conn)
            except Exception as exc:
                if is_connection_error(exc, conn if conn is not None else self._conn):
                    self._drop()
                translated = translate_pg_error(exc, where, action=action)
                if translated is None or translated is exc:
                    raise
                raise translated from exc

        return job

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - it is gone either way
                pass

    def transaction(
        self, fn: Callable[[Conn], T], durability: Durability
    ) -> Callable[[Conn], tuple[T, float, float]]:
        """``fn`` in one write transaction: ``(result, commit_s, transaction_s)``."""
        local: str | None = None
        if durability is Durability.MARKET and self._market_sync_off:
            local = "SET LOCAL synchronous_commit = off"
        where = self._where

        def job(conn: Conn) -> tuple[T, float, float]:
            started = time.perf_counter()
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                conn.execute("BEGIN")
                try:
                    if local is not None:
                        conn.execute(local)
                    elif self._force_sync_on:
                        conn.execute("SET LOCAL synchronous_commit = on")
                    result = fn(conn)
                    commit_started = time.perf_counter()
                    conn.execute("COMMIT")
                except psycopg.Error as exc:
                    _rollback(conn, where)
                    if exc.sqlstate in RETRYABLE and attempt < WRITE_ATTEMPTS:
                        log.info("store %s: %s; retrying (%d)", where, exc.sqlstate, attempt)
                        continue
                    if exc.sqlstate in RETRYABLE:
                        raise StoreBusyError(
                            f"store {where}: {exc.sqlstate} in {WRITE_ATTEMPTS} attempts "
                            f"[{exc.diag.message_primary}]",
                            path=where,
                        ) from exc
                    raise
                except BaseException:
                    _rollback(conn, where)
                    raise
                done = time.perf_counter()
                return result, done - commit_started, done - started
            raise AssertionError("unreachable")  # pragma: no cover

        return job
