"""The SQLite owner's connection on its lane: how each call, transaction and close runs.

:class:`LaneConnection` holds the one :class:`sqlite3.Connection` of
:class:`~daemon.store.sqlite.SqliteStore` and builds the jobs that run on the
owner's lane (see :mod:`daemon.store.sqlite` for why one connection, one
lane):

* :meth:`~LaneConnection.job` — one call on the connection, its errors
  translated to :class:`~daemon.store.errors.StoreError` inside the lane;
  :class:`~daemon.store.errors.StoreClosedError` once the store is closing;
* :meth:`~LaneConnection.transaction` — ``BEGIN IMMEDIATE`` … ``COMMIT``
  (rolled back when anything raises), timed, at the ``synchronous`` level of
  its :class:`~daemon.store.base.Durability` (set just before ``BEGIN`` when
  the kind changes: SQLite refuses to change it inside a transaction);
* :func:`read_snapshot` — a read transaction that never commits;
* :meth:`~LaneConnection.open` and :meth:`~LaneConnection.close` — the
  connection made on the lane (by the owner's connect job) and closed there,
  shielded with a deadline.

The owner keeps what a call means to the store: counters, health, status.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import trio

from daemon.store.base import SYNCHRONOUS_LEVELS, Durability, Runner
from daemon.store.errors import StoreClosedError, translate_error

__all__ = ["CLOSE_TIMEOUT_S", "Connect", "LaneConnection", "read_snapshot", "synchronous_name"]

log = logging.getLogger("tradingd.store")

T = TypeVar("T")

#: Bound on the shielded close at shutdown.
CLOSE_TIMEOUT_S = 30.0

_SYNC_NAMES = {level: name for name, level in SYNCHRONOUS_LEVELS.items()}


def synchronous_name(level: int) -> str:
    """The ``PRAGMA synchronous`` name of ``level``."""
    return _SYNC_NAMES[level]


#: What opens the connection on the lane: the connection, the migrations
#: applied and the schema version.
Connect = Callable[[], tuple[sqlite3.Connection, list[int], int]]


def read_snapshot(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` in a read transaction (one consistent snapshot), rolled back after."""

    def job(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # a read must not change anything

    return job


class LaneConnection:
    """The owner's one connection, used only from calls on ``runner``.

    Args:
        path: The database file (error texts, log lines).
        runner: The owner's lane.
        synchronous_market: ``synchronous`` of :attr:`Durability.MARKET`
            commits; CRITICAL commits are always FULL.
    """

    def __init__(self, path: str, runner: Runner, *, synchronous_market: str) -> None:
        self._path = path
        self._runner = runner
        self._levels = {
            Durability.CRITICAL: SYNCHRONOUS_LEVELS["FULL"],
            Durability.MARKET: SYNCHRONOUS_LEVELS[synchronous_market],
        }
        self._conn: sqlite3.Connection | None = None
        self._closing = False
        self._sync_level: int | None = None  # touched only inside lane calls

    @property
    def closed(self) -> bool:
        """True before :meth:`open` and once :meth:`close` has started."""
        return self._conn is None or self._closing

    async def open(self, connect: Connect) -> tuple[list[int], int]:
        """Run ``connect`` on the lane and keep its connection (``synchronous=FULL``).

        Returns the migrations applied and the schema version.
        """
        conn, applied, version = await self._runner(connect)
        self._sync_level = SYNCHRONOUS_LEVELS["FULL"]
        self._conn = conn
        return applied, version

    async def close(self) -> bool:
        """Close the connection (after the lane's queued work); False when already closed.

        Shielded with a deadline, so a cancelled shutdown still closes the file
        cleanly (the last connection's close checkpoints the WAL).
        """
        conn = self._conn
        if conn is None or self._closing:
            return False
        self._closing = True

        def job() -> None:
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            conn.close()

        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            try:
                await self._runner(job)
            except sqlite3.Error:
                log.exception("store %s: error while closing", self._path)
        self._conn = None
        return True

    def job(self, fn: Callable[[sqlite3.Connection], T], *, action: str) -> Callable[[], T]:
        """The lane job running ``fn(conn)``, its errors translated (``action`` names it).

        Raises:
            StoreClosedError: now, when the store is closed or closing.
        """
        conn = self._conn
        if conn is None or self._closing:
            raise StoreClosedError(f"store {self._path}: closed", path=self._path)
        path = self._path

        def job() -> T:
            try:
                return fn(conn)
            except Exception as exc:
                translated = translate_error(exc, path, action=action)
                if translated is None or translated is exc:
                    raise
                raise translated from exc

        return job

    def transaction(
        self, fn: Callable[[sqlite3.Connection], T], durability: Durability
    ) -> Callable[[sqlite3.Connection], tuple[T, float, float]]:
        """``fn`` in one write transaction: ``(result, commit_s, transaction_s)``."""
        level = self._levels[durability]

        def job(conn: sqlite3.Connection) -> tuple[T, float, float]:
            self._apply_synchronous(conn, level)
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                commit_started = time.perf_counter()
                conn.execute("COMMIT")
            except BaseException:
                # SQLite rolls some failures (SQLITE_FULL, IOERR) back on its own.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("store %s: rollback failed", self._path, exc_info=True)
                raise
            done = time.perf_counter()
            return result, done - commit_started, done - started

        return job

    def _apply_synchronous(self, conn: sqlite3.Connection, level: int) -> None:
        # Outside a transaction only: SQLite refuses to change it inside one.
        if self._sync_level != level:
            conn.execute(f"PRAGMA synchronous = {_SYNC_NAMES[level]}")
            self._sync_level = level
