"""The PostgreSQL owner: one psycopg connection, used only from one worker-thread lane.

``[store] backend = "postgres"``: the same guarantees as
:class:`~daemon.store.sqlite.SqliteStore`, on a server several daemons can
share. psycopg 3 has no Trio support (its async API is asyncio-only), so the
owner uses the **sync** API on one dedicated connection owned by one
:class:`~daemon.resilience.ThreadLane` (``max_threads=1``, threads named
``tradingd:store``) — exactly as SQLite's connection is owned: one FIFO
order of database work, nothing blocking on the event loop.

What differs from SQLite, and why it is sound:

* **Concurrency is real.** Other daemons write the same tables, so the
  order tables' functions (``pg_orders_*.py``) lock what they change: an
  intent's row ``FOR UPDATE`` before a transition, whose ``UPDATE`` is a
  compare-and-set on the state it read (``WHERE client_order_id = … AND
  state = <from> RETURNING``): of two daemons advancing the same intent one
  wins, the other gets :class:`~daemon.store.orders_rules.StaleStateError`
  and changes nothing. Intent ``seq`` numbers are assigned under a
  transaction-level advisory lock; positions are read ``FOR UPDATE``.
* **Durability** is the server's: a COMMIT returns after the WAL flush
  (CRITICAL). MARKET commits may run with ``synchronous_commit = off``
  (``synchronous_market = "NORMAL"``), see :mod:`daemon.store.pg_lane`.
* **The connection can be lost** (server restart, ``pg_terminate_backend``,
  network): the call fails with a transient
  :class:`~daemon.store.errors.StoreIOError`, the server has rolled its
  transaction back, and the next call connects again (health: UNHEALTHY
  while writes fail, HEALTHY after the next commit).
* **Reads** run in a REPEATABLE READ, READ ONLY transaction (one snapshot).
* **Schema**: :mod:`daemon.store.pg_migrations`, applied at open in one
  transaction under an advisory lock; a newer schema is refused.
* No file: ``path`` is the DSN without its password
  (:func:`~daemon.store.pg_errors.public_dsn`), the only form of the DSN that
  appears in errors, logs and status. The password is passed to the driver
  separately and kept nowhere else. There is no ``integrity_check`` and no
  ``VACUUM``: the server checks its pages (``data_checksums``, ``amcheck``)
  and autovacuum reclaims space.

Table access is the ``pg_*.py`` modules, gathered in
:data:`~daemon.store.pg_dialect.POSTGRES` (this owner's ``sql``); the facades
(``store.market``, ``store.dead_letters``, :class:`~daemon.store.orders.OrderStore`)
are the same classes as SQLite's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
from daemon.store.errors import StoreError, StoreOpenError
from daemon.store.marketdata import MarketDataStore
from daemon.store.migrations import Migration
from daemon.store.owner_health import CallKind, HealthTracker
from daemon.store.pg_dialect import POSTGRES, prepare_session
from daemon.store.pg_errors import public_dsn, translate_pg_error
from daemon.store.pg_lane import PgLaneConnection, pg_read_snapshot
from daemon.store.pg_migrations import PG_MIGRATIONS, check_schema, migrate

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "PostgresStore"]

log = logging.getLogger("tradingd.store")

T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: How long a connection attempt may take (libpq's ``connect_timeout``).
DEFAULT_CONNECT_TIMEOUT_S = 10
#: TCP keepalives, so a dead server or network is noticed in about a minute.
_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def _conninfo(dsn: str, connect_timeout_s: int) -> str:
    """``dsn`` with tradingd's defaults for what it does not set itself."""
    given = conninfo_to_dict(dsn)
    extra: dict[str, Any] = {k: v for k, v in _KEEPALIVES.items() if k not in given}
    extra.setdefault("connect_timeout", str(connect_timeout_s))
    if "connect_timeout" in given:
        extra.pop("connect_timeout")
    if "application_name" not in given:
        extra["application_name"] = "tradingd"
    return make_conninfo(dsn, **extra)


def _connect(
    conninfo: str,
    password: str | None,
    *,
    where: str,
    busy_timeout_s: float,
    statement_timeout_s: float,
    migrations: Sequence[Migration] | None,
    wall_clock: Callable[[], float],
    result: list[tuple[list[int], int]],
) -> Conn:
    """Connect, set the session up, migrate (first open) or check (reconnects) the schema.

    Runs on the owner's lane; the connection is closed again when anything
    fails. ``result`` receives ``(applied, version)``.
    """
    kwargs: dict[str, Any] = {"autocommit": True}
    if password is not None:
        kwargs["password"] = password
    try:
        conn: Conn = psycopg.connect(conninfo, **kwargs)
    except psycopg.Error as exc:
        raise (translate_pg_error(exc, where, action="connecting") or exc) from None
    try:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('lock_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (
                f"{int(statement_timeout_s * 1000)}ms",
                f"{int(busy_timeout_s * 1000)}ms",
                "60s",
            ),
        )
        if migrations is not None:
            now_ms = int(wall_clock() * 1000)
            result.append(migrate(conn, where, now_ms=now_ms, migrations=migrations))
        else:
            version = check_schema(conn, where)
            result.append(([], version))
        prepare_session(conn)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, psycopg.Error):
            raise (translate_pg_error(exc, where, action="opening") or exc) from exc
        raise
    return conn


class PostgresStore:
    """The owner of a PostgreSQL database (a schema on a shared server).

    Open with :meth:`open` (it connects and migrates); use as
    ``async with await PostgresStore.open(dsn) as store``. Implements
    :class:`~daemon.store.base.StoreOwner` as ``StoreOwner[psycopg.Connection]``.

    Attributes:
        path: The DSN without its password.
        market: The market data tables.
        dead_letters: The durable dead letters.
        stats: Counters.
        lane: The owner's lane (``None`` with an injected runner).
        schema_version: The schema's version after migrations.
        migrations_applied: Versions applied by this open (empty when current).
    """

    def __init__(
        self,
        where: str,
        *,
        runner: Runner,
        lane: ThreadLane | None,
        synchronous_market: str,
        wall_clock: Callable[[], float],
    ) -> None:
        self.path = where
        self._runner = runner
        self.lane = lane
        self.synchronous_market = synchronous_market
        self._connection = PgLaneConnection(
            where, runner, market_sync_off=synchronous_market == "NORMAL"
        )
        self.wall_clock = wall_clock
        self.stats = StoreStats()
        self.schema_version = 0
        self.migrations_applied: tuple[int, ...] = ()
        self._health = HealthTracker(where, self.stats, wall_clock)
        #: PostgreSQL's function sets (the ``pg_*.py`` modules).
        self.sql: Dialect = POSTGRES
        self.market = MarketDataStore(self)
        self.dead_letters = SqliteDeadLetterStore(self)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        synchronous_market: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        statement_timeout_s: float = 0.0,
        connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
        runner: Runner | None = None,
        migrations: Sequence[Migration] = PG_MIGRATIONS,
        wall_clock: Callable[[], float] = time.time,
    ) -> PostgresStore:
        """Connect to ``dsn`` and migrate its schema (the first of ``search_path``).

        Args:
            dsn: A libpq DSN (``"host=… dbname=… user=…"`` or a ``postgresql://`` URL).
            password: Given separately (from a secret reference), never part of ``dsn``'s
                public form.
            synchronous_market: ``"NORMAL"``: MARKET commits with
                ``synchronous_commit = off``; ``"FULL"``: every commit waits for the WAL.
            busy_timeout_s: ``lock_timeout``: how long a statement waits for a row lock.
            statement_timeout_s: ``statement_timeout`` (0: none).
            connect_timeout_s: libpq's ``connect_timeout``.
            runner: Where blocking calls run; default a one-thread lane named ``store``.
            migrations: The schema steps (tests inject extra ones).
            wall_clock: Epoch seconds, for stored times.

        Raises:
            StoreVersionError: the schema is newer than this code (nothing written).
            StoreOpenError: bad DSN, authentication, no database, another program's schema.
            StoreMigrationError: a migration failed (rolled back).
            StoreUnavailableError: the server is unreachable, busy, full or read-only.
        """
        if synchronous_market not in SYNCHRONOUS_LEVELS:
            raise ValueError(
                f"synchronous_market must be one of {sorted(SYNCHRONOUS_LEVELS)}, "
                f"got {synchronous_market!r}"
            )
        if busy_timeout_s < 0 or statement_timeout_s < 0:
            raise ValueError("busy_timeout_s and statement_timeout_s must be >= 0")
        where = public_dsn(dsn)
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StoreOpenError(f"store {where}: the DSN does not parse", path=where) from None
        if params.get("password"):
            log.warning(
                "store %s: the DSN holds a password; give it as a secret reference "
                "([store] password) instead",
                where,
            )
        conninfo = _conninfo(dsn, connect_timeout_s)
        lane: ThreadLane | None = None
        if runner is None:
            lane = ThreadLane("store", max_threads=1)
            runner = lane_runner(lane)
        store = cls(
            where,
            runner=runner,
            lane=lane,
            synchronous_market=synchronous_market,
            wall_clock=wall_clock,
        )
        opened: list[tuple[list[int], int]] = []

        def connect() -> Conn:
            # The first connection migrates; a reconnect only checks the schema.
            return _connect(
                conninfo,
                password,
                where=where,
                busy_timeout_s=busy_timeout_s,
                statement_timeout_s=statement_timeout_s,
                migrations=None if opened else migrations,
                wall_clock=wall_clock,
                result=opened,
            )

        await store._connection.open(connect)
        applied, version = opened[0]
        store.schema_version = version
        store.migrations_applied = tuple(applied)
        if applied:
            log.info(
                "store %s: migrated to schema version %d (applied %s)", where, version, applied
            )
        log.info(
            "store %s open: PostgreSQL, schema %d, market commits %s",
            where,
            version,
            "synchronous_commit=off" if synchronous_market == "NORMAL" else "synchronous",
        )
        return store

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started."""
        return self._connection.closed

    async def aclose(self) -> None:
        """Close the connection (after the lane's queued work); idempotent."""
        if await self._connection.close():
            log.info("store %s closed", self.path)

    async def __aenter__(self) -> PostgresStore:
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
        fn: Callable[[Conn], T],
        *,
        durability: Durability = Durability.CRITICAL,
        action: str = "writing",
    ) -> T:
        """Run ``fn(conn)`` in one write transaction on the lane and commit it.

        Raises:
            StoreError: translated; the transaction was rolled back.
        """
        job = self._connection.transaction(fn, durability)
        self.stats.writes += 1
        result, commit_s, transaction_s = await self._submit(job, action=action, kind="write")
        self.stats.record_commit(commit_s, transaction_s)
        return result

    async def read(self, fn: Callable[[Conn], T], *, action: str = "reading") -> T:
        """Run ``fn(conn)`` in a REPEATABLE READ, READ ONLY transaction; never commits."""
        self.stats.reads += 1
        return await self._submit(pg_read_snapshot(fn, self.path), action=action, kind="read")

    async def call(self, fn: Callable[[Conn], T], *, action: str = "calling") -> T:
        """Run ``fn(conn)`` on the lane outside any transaction (maintenance, tests).

        Does not touch health.
        """
        return await self._submit(fn, action=action, kind="call")

    async def _submit(self, fn: Callable[[Conn], T], *, action: str, kind: CallKind) -> T:
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

    def health(self) -> StoreHealth:
        """The store's state: level, reason (naming the public DSN), last error."""
        return self._health.health(closed=self.closed)

    def check(self) -> tuple[HealthLevel, str | None]:
        """The health-model hook: ``health_model.add_check("store", store.check)``."""
        state = self.health()
        return state.level, state.reason

    def status(self) -> dict[str, Any]:
        """JSON-able state for ``/status``: DSN (no password), schema, health, counters, lane."""
        return {
            "backend": "postgres",
            "path": self.path,
            "schema_version": self.schema_version,
            "synchronous": {
                "market": "off" if self.synchronous_market == "NORMAL" else "on",
                "critical": "on",
            },
            "reconnects": self._connection.reconnects,
            "health": self.health().to_dict(),
            "stats": self.stats.snapshot(),
            "lane": self.lane.snapshot() if self.lane is not None else None,
        }
