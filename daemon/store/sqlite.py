"""The store's owner: one SQLite connection, used only from one worker-thread lane.

Why one owner: SQLite serialises writers anyway, and one connection used by
one lane at a time gives a single, FIFO order of database work that is easy to
reason about — an insert issued while retention prunes waits for at most one
pruning batch, never for the whole prune. Why a thread: every SQLite call
blocks (disk, fsync, the busy handler), and a blocked event loop stalls every
feed and trips the watchdog. So all access goes through one
:class:`~daemon.resilience.ThreadLane` (``max_threads=1``, threads named
``tradingd:store``): the connection is created in a call on that lane and only
ever used from calls on it (``check_same_thread=False`` is safe because the
lane serialises them; the OS thread may differ from call to call).

Durability policy (docs/ARCHITECTURE.md §6): WAL mode; every transaction declares a
:class:`~daemon.store.base.Durability`. ``CRITICAL`` commits (orders, dead
letters, schema) always run with ``synchronous=FULL``; ``MARKET`` commits run
with ``synchronous_market`` (``"NORMAL"`` by default, ``"FULL"`` when
configured). SQLite's ``synchronous`` is per connection and cannot change
inside a transaction, so the store sets it just before ``BEGIN`` whenever the
kind changes (a no-op when it does not). In WAL mode a FULL commit fsyncs the
log, which also hardens every earlier NORMAL commit, so interleaving never
weakens a CRITICAL commit; a NORMAL commit may be lost to a power cut, but
never half-applied, and the ingest checkpoint is committed in the same
transaction as its trades.

Errors are translated once, inside the lane (:func:`~daemon.store.errors.translate_error`):
busy/locked, disk full, read-only and I/O errors become
:class:`~daemon.store.errors.StoreUnavailableError` subclasses (transient),
corruption :class:`~daemon.store.errors.StoreCorruptError` (permanent). A
failed write transaction is rolled back; nothing committed before is touched,
and the next write after the condition clears simply works. :meth:`SqliteStore.check`
reports the state to the health model; while writes fail, the store service
runs :meth:`SqliteStore.probe_write` every second, so that health turns back
by itself once there is room again, even when nothing else writes.

Table access lives in one module per concern, each depending on the owner
interface (:class:`~daemon.store.base.StoreOwner`), not on this class:
:mod:`~daemon.store.marketdata` (``store.market``),
:mod:`~daemon.store.deadletters` (``store.dead_letters``),
:mod:`~daemon.store.orders` (:class:`~daemon.store.orders.OrderStore`, built by
the orders service over the open store) and :mod:`~daemon.store.maintenance`.

The connection itself, and the jobs that run on it (a call with its errors
translated, a write transaction at its durability's ``synchronous`` level, a
read snapshot, the close), are :class:`~daemon.store.sqlite_lane.LaneConnection`'s
(:mod:`daemon.store.sqlite_lane`); this module opens it and keeps the counters,
health and status.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from daemon.health import HealthLevel
from daemon.resilience.threads import ThreadLane
from daemon.store.base import (
    SYNCHRONOUS_LEVELS,
    Durability,
    Runner,
    StoreHealth,
    StoreStats,
    lane_runner,
)
from daemon.store.deadletters import SqliteDeadLetterStore
from daemon.store.dialect import Dialect
from daemon.store.errors import StoreError, StoreOpenError, translate_error
from daemon.store.maintenance import integrity_check
from daemon.store.marketdata import MarketDataStore
from daemon.store.migrations import MIGRATIONS, Migration, check_file, migrate, schema_version
from daemon.store.owner_health import CallKind, HealthTracker
from daemon.store.sqlite_dialect import SQLITE
from daemon.store.sqlite_lane import LaneConnection, read_snapshot, synchronous_name

__all__ = ["DEFAULT_BUSY_TIMEOUT_S", "SqliteStore"]

log = logging.getLogger("tradingd.store")

T = TypeVar("T")

#: How long a write waits for another connection's lock before SQLITE_BUSY.
DEFAULT_BUSY_TIMEOUT_S = 5.0
#: Page cache of the connection.
DEFAULT_CACHE_SIZE_KIB = 32 * 1024
#: WAL pages before an automatic checkpoint (SQLite's default).
DEFAULT_WAL_AUTOCHECKPOINT_PAGES = 1000
#: The WAL file is truncated back to this size after a checkpoint.
DEFAULT_JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

#: Bytes the write probe stores (and drops again, in the same transaction): enough
#: to need new pages of the database and new frames of the WAL, as a real write does.
WRITE_PROBE_BYTES = 64 * 1024

#: Mode of the database file. SQLite gives its -wal and -shm files the mode of
#: the database file, so the three are private together.
DB_FILE_MODE = 0o600


def _create_private(path: str) -> None:
    """Create the database file empty and 0600 (whatever the umask) if it is missing.

    SQLite would create it ``0644 & ~umask``: orders and positions readable by
    every local user. An empty file is an empty database to SQLite. An existing
    file is left as it is (it may be an operator's choice), with a warning when
    other users can read it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DB_FILE_MODE)
    except FileExistsError:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            return
        if mode & 0o077:
            log.warning(
                "store %s is accessible to other users (mode %04o); tradingd creates it "
                "%04o, and SQLite gives its -wal and -shm files the same mode "
                "(chmod 600 it unless this is intended)",
                path,
                mode,
                DB_FILE_MODE,
            )
        return
    try:
        os.fchmod(fd, DB_FILE_MODE)  # os.open's mode is masked by the umask
    finally:
        os.close(fd)


def _connect(
    path: str,
    *,
    busy_timeout_s: float,
    pragmas: Sequence[str],
    migrations: Sequence[Migration],
    wall_clock: Callable[[], float],
) -> tuple[sqlite3.Connection, list[int], int]:
    """Create (0600) and open the database, check it, switch it to WAL, set ``pragmas``
    and migrate it: the connection, the versions applied and the schema version.

    Runs on the owner's lane; the connection is closed again when anything fails.
    """
    try:
        _create_private(path)
    except OSError as exc:
        raise StoreOpenError(
            f"store {path}: cannot create: {exc.strerror or exc}", path=path
        ) from exc
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # the lane serialises all use
            cached_statements=256,
        )
    except sqlite3.Error as exc:
        raise _translated(exc, path, "opening") from exc
    try:
        # Read-only checks first: a file we must not touch stays untouched.
        check_file(conn, path, migrations=migrations)
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise StoreOpenError(
                f"store {path}: cannot enable WAL mode (journal_mode is {mode!r})",
                path=path,
            )
        conn.execute("PRAGMA foreign_keys = ON")
        for pragma in pragmas:
            conn.execute(pragma)
        applied = migrate(conn, path, now_ms=int(wall_clock() * 1000), migrations=migrations)
        version = schema_version(conn)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, Exception):
            translated = translate_error(exc, path, action="opening")
            if translated is not None and translated is not exc:
                raise translated from exc
        raise
    return conn, applied, version


def _write_probe(conn: sqlite3.Connection) -> None:
    """A write that needs space and leaves nothing behind (see :meth:`SqliteStore.probe_write`).

    The scratch table is created, filled and dropped in one transaction: no
    reader ever sees it.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS tradingd_write_probe (data BLOB)")
    conn.execute(
        "INSERT INTO tradingd_write_probe (data) VALUES (zeroblob(?))", (WRITE_PROBE_BYTES,)
    )
    conn.execute("DROP TABLE tradingd_write_probe")


class SqliteStore:
    """The single owner of the tradingd database file. Create with :meth:`open`.

    Example::

        async with await SqliteStore.open("/var/lib/tradingd/store.db") as store:
            summary = await store.market.insert_trades(
                trades, checkpoint=("binance", "BTCUSDT", "trades")
            )
            health.add_check("store", store.check)

    Attributes:
        path: The database file.
        market: Market data tables (:class:`~daemon.store.marketdata.MarketDataStore`).
        dead_letters: The durable :class:`~daemon.resilience.DeadLetterStore`.
        stats: Counters (:class:`~daemon.store.base.StoreStats`).
        lane: The thread lane (``None`` when a custom runner was given).
        schema_version: The file's schema version after migrations.
        migrations_applied: Versions applied by this open (empty when current).
    """

    def __init__(
        self,
        path: Path,
        *,
        runner: Runner,
        lane: ThreadLane | None,
        synchronous_market: str,
        busy_timeout_s: float,
        cache_size_kib: int,
        wal_autocheckpoint_pages: int,
        journal_size_limit_bytes: int,
        wall_clock: Callable[[], float],
    ) -> None:
        self.path = path
        self._path_str = str(path)
        self._runner = runner
        self.lane = lane
        # Integrity checks use their own read-only connection and lane, so a
        # long check never holds up ingestion on the owner's lane.
        self._check_runner: Runner = (
            lane_runner(ThreadLane("store-check", max_threads=1)) if lane is not None else runner
        )
        self.synchronous_market = synchronous_market
        self._connection = LaneConnection(
            self._path_str, runner, synchronous_market=synchronous_market
        )
        self.busy_timeout_s = busy_timeout_s
        self._cache_size_kib = cache_size_kib
        self._wal_autocheckpoint_pages = wal_autocheckpoint_pages
        self._journal_size_limit_bytes = journal_size_limit_bytes
        self.wall_clock = wall_clock
        self.stats = StoreStats()
        self.schema_version = 0
        self.migrations_applied: tuple[int, ...] = ()
        self._health = HealthTracker(self._path_str, self.stats, wall_clock)
        #: SQLite's function sets (the table modules of this package).
        self.sql: Dialect = SQLITE
        self.market = MarketDataStore(self)
        self.dead_letters = SqliteDeadLetterStore(self)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous_market: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        runner: Runner | None = None,
        cache_size_kib: int = DEFAULT_CACHE_SIZE_KIB,
        wal_autocheckpoint_pages: int = DEFAULT_WAL_AUTOCHECKPOINT_PAGES,
        journal_size_limit_bytes: int = DEFAULT_JOURNAL_SIZE_LIMIT_BYTES,
        migrations: Sequence[Migration] = MIGRATIONS,
        wall_clock: Callable[[], float] = time.time,
    ) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and migrate it.

        Args:
            path: The database file. Its directory must exist.
            synchronous_market: ``synchronous`` for :attr:`Durability.MARKET`
                commits (``"NORMAL"`` or ``"FULL"``); CRITICAL commits are
                always FULL.
            busy_timeout_s: How long to wait for another connection's lock.
            runner: Where blocking calls run; default a one-thread
                :class:`~daemon.resilience.ThreadLane` named ``store``. Tests
                under a virtual clock pass :func:`~daemon.store.base.inline_runner`.
            cache_size_kib: SQLite page cache.
            wal_autocheckpoint_pages: WAL size (pages) that triggers a checkpoint.
            journal_size_limit_bytes: WAL size kept after a checkpoint.
            migrations: The schema steps (tests inject extra ones).
            wall_clock: Epoch seconds, for ``ingested_at_ms`` and error times.

        Raises:
            StoreCorruptError: the file is not a database.
            StoreVersionError: the file's schema is newer than this code
                (nothing is written).
            StoreOpenError: it cannot be opened, or belongs to another program.
            StoreMigrationError: a migration failed (rolled back).
            StoreUnavailableError: busy, full, read-only or I/O trouble.
        """
        if synchronous_market not in SYNCHRONOUS_LEVELS:
            raise ValueError(
                f"synchronous_market must be one of {sorted(SYNCHRONOUS_LEVELS)}, "
                f"got {synchronous_market!r}"
            )
        if busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file:"):
            raise ValueError(f"the store needs a plain file path, got {text!r}")
        lane: ThreadLane | None = None
        if runner is None:
            lane = ThreadLane("store", max_threads=1)
            runner = lane_runner(lane)
        store = cls(
            Path(text),
            runner=runner,
            lane=lane,
            synchronous_market=synchronous_market,
            busy_timeout_s=busy_timeout_s,
            cache_size_kib=cache_size_kib,
            wal_autocheckpoint_pages=wal_autocheckpoint_pages,
            journal_size_limit_bytes=journal_size_limit_bytes,
            wall_clock=wall_clock,
        )
        await store._open(migrations)
        return store

    async def _open(self, migrations: Sequence[Migration]) -> None:
        path = self._path_str
        connect = partial(
            _connect,
            path,
            busy_timeout_s=self.busy_timeout_s,
            pragmas=(
                f"PRAGMA cache_size = -{int(self._cache_size_kib)}",
                f"PRAGMA wal_autocheckpoint = {int(self._wal_autocheckpoint_pages)}",
                f"PRAGMA journal_size_limit = {int(self._journal_size_limit_bytes)}",
                f"PRAGMA synchronous = {synchronous_name(SYNCHRONOUS_LEVELS['FULL'])}",
            ),
            migrations=migrations,
            wall_clock=self.wall_clock,
        )
        applied, version = await self._connection.open(connect)
        self.schema_version = version
        self.migrations_applied = tuple(applied)
        if applied:
            log.info("store %s: migrated to schema version %d (applied %s)", path, version, applied)
        log.info(
            "store %s open: schema %d, WAL, synchronous market=%s critical=FULL",
            path,
            version,
            self.synchronous_market,
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started."""
        return self._connection.closed

    async def aclose(self) -> None:
        """Close the connection (after the lane's queued work); idempotent.

        Shielded with a deadline, so a cancelled shutdown still closes the file
        cleanly (the last connection's close checkpoints the WAL).
        """
        if await self._connection.close():
            log.info("store %s closed", self._path_str)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ access

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durability: Durability = Durability.CRITICAL,
        action: str = "writing",
    ) -> T:
        """Run ``fn(conn)`` in one write transaction on the lane and commit it.

        ``BEGIN IMMEDIATE`` takes the write lock up front (a busy database fails
        at the start, not at commit); the transaction is rolled back when ``fn``
        or the commit raises. The synchronous level follows ``durability``.

        Raises:
            StoreError: translated; the transaction was rolled back.
        """
        job = self._connection.transaction(fn, durability)
        self.stats.writes += 1
        result, commit_s, transaction_s = await self._submit(job, action=action, kind="write")
        self.stats.record_commit(commit_s, transaction_s)
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, action: str = "reading") -> T:
        """Run ``fn(conn)`` in a read transaction (one consistent snapshot); never commits."""
        self.stats.reads += 1
        return await self._submit(read_snapshot(fn), action=action, kind="read")

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, action: str = "calling") -> T:
        """Run ``fn(conn)`` on the lane outside any transaction.

        The escape hatch for maintenance and tests (PRAGMAs, trace callbacks).
        Does not touch health.
        """
        return await self._submit(fn, action=action, kind="call")

    async def integrity_check(self, *, max_errors: int = 100) -> list[str]:
        """``PRAGMA integrity_check`` and ``foreign_key_check`` on a separate
        read-only connection; ``[]`` when the database is sound.

        Runs in its own thread (``tradingd:store-check``), not on the owner's
        lane: a check of a large file takes long and must not stall ingestion
        (WAL lets it read while the owner writes). The CLI calls
        :func:`~daemon.store.maintenance.integrity_check` directly.
        """
        path = self._path_str
        return await self._check_runner(lambda: integrity_check(path, max_errors=max_errors))

    async def _submit(
        self, fn: Callable[[sqlite3.Connection], T], *, action: str, kind: CallKind
    ) -> T:
        job = self._connection.job(fn, action=action)  # StoreClosedError: not a health event
        try:
            result = await self._runner(job)
        except StoreError as exc:
            self._health.failed(exc, kind)
            raise
        if kind == "write":
            self._health.write_ok()
        elif kind == "read":
            self._health.read_ok()
        return result

    # ------------------------------------------------------------------ health

    @property
    def writes_failing(self) -> bool:
        """Whether writes fail now (disk full, read-only, locked, I/O); see :meth:`probe_write`."""
        return self._health.writes_failing

    @property
    def write_failure(self) -> StoreError | None:
        """Why writes fail now (``None`` while they work, and after corruption)."""
        return self._health.write_failure

    async def probe_write(self) -> None:
        """One small CRITICAL write that needs new space: a scratch table created, given
        :data:`WRITE_PROBE_BYTES` and dropped in one transaction.

        :func:`~daemon.store.owner_health.run_write_probe` calls it while
        :attr:`writes_failing`, so that health recovers when space returns even
        if nothing else writes. A write that touches only existing pages would
        commit on a full disk (SQLite reuses WAL frames), and say nothing.

        Raises:
            StoreError: translated; the transaction was rolled back.
        """
        await self.write(_write_probe, action="probing whether writes work again")

    def health(self) -> StoreHealth:
        """The store's state: level, reason (naming the file), last error."""
        return self._health.health(closed=self.closed)

    def check(self) -> tuple[HealthLevel, str | None]:
        """The health-model hook: ``health_model.add_check("store", store.check)``."""
        state = self.health()
        return state.level, state.reason

    def status(self) -> dict[str, Any]:
        """JSON-able state for ``/status``: file, schema, health, counters, lane."""
        return {
            "backend": "sqlite",
            "path": self._path_str,
            "schema_version": self.schema_version,
            "synchronous": {"market": self.synchronous_market, "critical": "FULL"},
            "health": self.health().to_dict(),
            "stats": self.stats.snapshot(),
            "lane": self.lane.snapshot() if self.lane is not None else None,
        }


def _translated(exc: Exception, path: str, action: str) -> Exception:
    return translate_error(exc, path, action=action) or exc
