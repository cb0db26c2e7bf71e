"""The owner interface and the vocabulary shared by the store modules.

:class:`StoreOwner` is what a backend offers the modules that keep one
concern's tables (:mod:`~daemon.store.marketdata`,
:mod:`~daemon.store.deadletters`, :mod:`~daemon.store.maintenance`,
:mod:`~daemon.store.orders`): run a write transaction, run a read, the wall
clock, the function sets of its dialect (``sql``), and the state those
modules report (path, closed, counters). They depend on this interface,
never on an owner class; an owner (:class:`~daemon.store.sqlite.SqliteStore`,
:class:`~daemon.store.postgres.PostgresStore`) builds them and is the only
module that opens connections to its database. The interface is generic in
the connection type: the table modules hold the SQL of their backend
(SQLite's on a :class:`sqlite3.Connection`, PostgreSQL's on a
``psycopg.Connection``), gathered per backend in a
:class:`~daemon.store.dialect.Dialect`, so a backend is one owner plus one
module per concern.

The rest: durability classes, runners, counters, health.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import trio

from daemon.health import HealthLevel
from daemon.resilience.threads import ThreadLane

if TYPE_CHECKING:
    from daemon.store.dialect import Dialect

__all__ = [
    "SYNCHRONOUS_LEVELS",
    "Durability",
    "Runner",
    "StoreHealth",
    "StoreOwner",
    "StoreStats",
    "TableStats",
    "inline_runner",
    "lane_runner",
]

T = TypeVar("T")
#: The connection type a backend hands to the functions it runs.
ConnT_co = TypeVar("ConnT_co", covariant=True)

#: ``PRAGMA synchronous`` values the store accepts, by name.
SYNCHRONOUS_LEVELS: dict[str, int] = {"NORMAL": 1, "FULL": 2}


class Durability(enum.Enum):
    """How hard a transaction's commit must hold against power loss.

    SQLite's ``synchronous`` is a property of the *connection*, and the store
    has one connection, so it is switched per transaction (before ``BEGIN``;
    SQLite refuses the switch inside one). In WAL mode that is sound: a FULL
    commit fsyncs the WAL, which also makes every earlier NORMAL commit in it
    durable, so mixing never weakens a CRITICAL commit.
    """

    #: Always ``synchronous=FULL``: orders, dead letters, schema changes —
    #: anything whose loss after an acknowledgement would break a promise.
    CRITICAL = "critical"
    #: ``synchronous_market`` of the store: NORMAL by default (a power cut may
    #: lose the last commits, which capture resumes from the checkpoint stored
    #: *in the same transaction*), FULL when configured.
    MARKET = "market"


class Runner(Protocol):
    """Runs a blocking function somewhere and returns its result.

    The store's default is its one-thread :class:`~daemon.resilience.ThreadLane`;
    tests under ``autojump_clock`` pass :func:`inline_runner`.
    """

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


async def inline_runner(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the calling thread, after a checkpoint — **for tests only**.

    It blocks the event loop for the duration of the call, which is exactly
    what the real store never does; under a virtual clock that is harmless and
    makes every store call deterministic.
    """
    await trio.lowlevel.checkpoint()
    return fn()


def lane_runner(lane: ThreadLane) -> Runner:
    """A :class:`Runner` that runs every call in ``lane`` (FIFO, one at a time when
    the lane has one thread)."""

    async def run(fn: Callable[[], T]) -> T:
        return await lane.run(fn)

    return run


@attrs.define
class TableStats:
    """Write counters of one table (metrics-ready: monotonic counts).

    ``rows_attempted == rows_inserted + rows_updated + rows_skipped + rows_failed``.
    """

    calls: int = 0
    chunks_committed: int = 0
    chunks_failed: int = 0
    rows_attempted: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_skipped: int = 0
    rows_failed: int = 0


@attrs.define
class StoreStats:
    """Counters of one store; ``snapshot()`` is JSON-able for ``/metrics`` and ``/status``.

    Updated on the event loop only (after a lane call returns), so reading
    them from a collector needs no lock.
    """

    writes: int = 0
    commits: int = 0
    write_errors: int = 0
    reads: int = 0
    read_errors: int = 0
    errors_by_type: dict[str, int] = attrs.Factory(dict)
    last_commit_s: float | None = None
    max_commit_s: float = 0.0
    total_commit_s: float = 0.0
    last_transaction_s: float | None = None
    tables: dict[str, TableStats] = attrs.Factory(dict)
    prune_batches: int = 0
    rows_pruned: int = 0

    def table(self, name: str) -> TableStats:
        """The counters of table ``name`` (created on first use)."""
        found = self.tables.get(name)
        if found is None:
            found = self.tables[name] = TableStats()
        return found

    def record_commit(self, commit_s: float, transaction_s: float) -> None:
        """Count one committed write transaction and its timings."""
        self.commits += 1
        self.last_commit_s = commit_s
        self.max_commit_s = max(self.max_commit_s, commit_s)
        self.total_commit_s += commit_s
        self.last_transaction_s = transaction_s

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return attrs.asdict(self)


@attrs.frozen
class StoreHealth:
    """The store's state for the health model and ``/status``.

    Attributes:
        level: HEALTHY; DEGRADED while reads fail transiently but writes work;
            UNHEALTHY while writes fail (disk full, read-only, locked, I/O), after
            corruption was detected (sticky until restart), or once closed.
        reason: One line naming the file and the condition (``None`` when healthy).
        last_error: The most recent store error's message, kept after recovery.
        last_error_type: Its class name (``"StoreFullError"``).
        last_error_at: Wall-clock epoch seconds of that error.
        failing_since: Epoch seconds of the first failure of the current run of
            failed writes (``None`` when writes work).
        consecutive_write_failures: Length of that run.
    """

    level: HealthLevel
    reason: str | None = None
    last_error: str | None = None
    last_error_type: str | None = None
    last_error_at: float | None = None
    failing_since: float | None = None
    consecutive_write_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["level"] = self.level.value
        return data


class StoreOwner(Protocol[ConnT_co]):
    """What a backend offers the store's table modules (the owner interface).

    Every table access is a function of one connection, run by the owner in
    one transaction on the owner's thread (its lane), with errors translated
    to :class:`~daemon.store.errors.StoreError` and health recorded there.
    :class:`~daemon.store.sqlite.SqliteStore` implements it as
    ``StoreOwner[sqlite3.Connection]``, :class:`~daemon.store.postgres.PostgresStore`
    as ``StoreOwner[psycopg.Connection]``.
    """

    @property
    def path(self) -> str | Path:
        """The database the owner holds, named in errors: SQLite's file, or
        PostgreSQL's DSN without its password."""
        ...

    @property
    def sql(self) -> Dialect:
        """The function sets that run on this owner's connections (its dialect)."""
        ...

    @property
    def closed(self) -> bool:
        """True once the owner is closing or closed (calls raise StoreClosedError)."""
        ...

    @property
    def stats(self) -> StoreStats:
        """The owner's counters; table modules add their own (event loop only)."""
        ...

    @property
    def wall_clock(self) -> Callable[[], float]:
        """Epoch seconds, for stored times (``ingested_at_ms``, retention cutoffs)."""
        ...

    async def write(
        self,
        fn: Callable[[ConnT_co], T],
        *,
        durability: Durability = ...,
        action: str = ...,
    ) -> T:
        """Run ``fn(conn)`` in one write transaction and commit it (rolled back when it raises).

        Raises:
            StoreError: translated; the transaction was rolled back.
        """
        ...

    async def read(self, fn: Callable[[ConnT_co], T], *, action: str = ...) -> T:
        """Run ``fn(conn)`` in a read transaction (one consistent snapshot); never commits."""
        ...
