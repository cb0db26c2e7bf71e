"""The store as a supervised child: the single owner of the database.

It opens the configured backend (``[store] backend``: the SQLite file, or
the PostgreSQL server named by ``dsn`` with the password of its secret
reference), migrating it, before reporting ready, so the children started
after it (market data, orders) find a working store; it runs the retention
task and, for SQLite, the write probe that lets health recover by itself
once a full disk has room again
(:func:`~daemon.store.owner_health.run_write_probe`); on stop it closes the
store last-in-first-out after its dependants (the ``data`` supervisor is
``rest_for_one``: a store restart restarts everything that uses it).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from trio_util import AsyncValue

from daemon.config import Config
from daemon.health import HealthLevel, LastingReason
from daemon.secrets import resolve
from daemon.store.errors import StoreFullError, StoreOpenError, StoreReadOnlyError
from daemon.store.maintenance import run_retention
from daemon.store.owner_health import run_write_probe
from daemon.store.postgres import PostgresStore
from daemon.store.sqlite import SqliteStore
from daemon.supervise import ChildContext

__all__ = ["CLOSE_TIMEOUT_S", "Store", "StoreService", "open_configured"]

log = logging.getLogger("tradingd.store")

#: Bounded time for closing the database at shutdown (a checkpoint may run).
CLOSE_TIMEOUT_S = 10.0

#: An open store of either backend (both are ``StoreOwner`` s with ``market``,
#: ``dead_letters``, ``check`` and ``status``).
Store = SqliteStore | PostgresStore


async def open_configured(config: Config) -> Store:
    """Open (and migrate) the store ``[store]`` configures.

    Raises:
        StoreError: as the backend's ``open`` (StoreOpenError for a bad ``dsn``).
        SecretError: the password's secret reference cannot be resolved.
    """
    cfg = config.store
    if cfg.backend == "postgres":
        for key, problem in cfg.problems():
            raise StoreOpenError(f"store: [store] {key}: {problem}")
        password = resolve(cfg.password).reveal() if cfg.password is not None else None
        return await PostgresStore.open(
            cfg.dsn,
            password=password,
            synchronous_market=cfg.synchronous_market,
            busy_timeout_s=cfg.busy_timeout_s,
            statement_timeout_s=cfg.pg_statement_timeout_s,
        )
    return await SqliteStore.open(
        config.store_path(),
        synchronous_market=cfg.synchronous_market,
        busy_timeout_s=cfg.busy_timeout_s,
    )


class StoreService:
    """Owns one open store for the daemon's lifetime (per incarnation)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        #: The open store, or None; tasks may ``await service.current.wait_value(...)``.
        self.current: AsyncValue = AsyncValue(None)

    @property
    def owner(self) -> Store | None:
        """The open store of either backend, or ``None``."""
        value = self.current.value
        assert value is None or isinstance(value, SqliteStore | PostgresStore)
        return value

    @property
    def store(self) -> SqliteStore | None:
        """The open SQLite store (callers not yet wired for PostgreSQL; see :attr:`owner`).

        Raises:
            StoreOpenError: the open store is PostgreSQL's.
        """
        return _sqlite_only(self.owner)

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        cfg = self.config.store
        store = await open_configured(self.config)
        log.info(
            "store %s open (%s, schema v%d%s)",
            store.path,
            cfg.backend,
            store.schema_version,
            f", migrated {list(store.migrations_applied)}" if store.migrations_applied else "",
        )
        self.current.value = store
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: run_retention(
                        store,
                        max_age_s=cfg.retention_days * 86_400 if cfg.retention_days else None,
                        interval_s=cfg.prune_interval_s,
                        batch_rows=cfg.prune_batch_rows,
                        task_status=task_status,
                    )
                )
                if isinstance(store, SqliteStore):
                    await nursery.start(run_write_probe, store)
                task_status.started()
                await ctx.wait_stop_requested()
                nursery.cancel_scope.cancel()
        finally:
            self.current.value = None
            with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await store.aclose()

    async def wait_owner(self) -> Store:
        """The open store of either backend (waits while it is being opened)."""
        value = await self.current.wait_value(lambda v: v is not None)
        assert isinstance(value, SqliteStore | PostgresStore)
        return value

    async def wait_store(self) -> SqliteStore:
        """The open SQLite store (callers not yet wired for PostgreSQL; see :meth:`wait_owner`).

        Raises:
            StoreOpenError: the open store is PostgreSQL's.
        """
        found = _sqlite_only(await self.wait_owner())
        assert found is not None
        return found

    def check(self) -> tuple[HealthLevel, str | None]:
        """The store's health; a full disk or a read-only file system is unhealthy
        for a :class:`~daemon.health.LastingReason`: no restart cures it, so the
        systemd watchdog keeps pinging and the daemon recovers in place (the write
        probe sees the space come back)."""
        store = self.owner
        if store is None:
            return HealthLevel.DEGRADED, "store: not open"
        level, reason = store.check()
        if (
            level is HealthLevel.UNHEALTHY
            and reason is not None
            and isinstance(store, SqliteStore)
            and not store.closed
            and isinstance(store.write_failure, StoreFullError | StoreReadOnlyError)
        ):
            return level, LastingReason(reason)
        return level, reason

    def status(self) -> dict[str, Any] | None:
        store = self.owner
        return store.status() if store is not None else None


def _sqlite_only(store: Store | None) -> SqliteStore | None:
    if isinstance(store, PostgresStore):
        raise StoreOpenError(
            f"store {store.path}: this caller still takes the SQLite store only "
            "(use StoreService.owner / wait_owner)",
            path=store.path,
        )
    return store
