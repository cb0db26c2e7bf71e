"""The store as a supervised child: the single owner of the database.

It opens the SQLite file (migrating it) before reporting ready, so the
children started after it (market data, later orders) find a working store;
it runs the retention task; on stop it closes the store last-in-first-out
after its dependants (the ``data`` supervisor is ``rest_for_one``: a store
restart restarts everything that uses it).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from trio_util import AsyncValue

from daemon.config import Config
from daemon.health import HealthLevel
from daemon.store.maintenance import run_retention
from daemon.store.sqlite import SqliteStore
from daemon.supervise import ChildContext

log = logging.getLogger("tradingd.store")

#: Bounded time for closing the database at shutdown (a checkpoint may run).
CLOSE_TIMEOUT_S = 10.0


class StoreService:
    """Owns one :class:`SqliteStore` for the daemon's lifetime (per incarnation)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        #: The open store, or None; tasks may ``await service.current.wait_value(...)``.
        self.current: AsyncValue = AsyncValue(None)

    @property
    def store(self) -> SqliteStore | None:
        value = self.current.value
        assert value is None or isinstance(value, SqliteStore)
        return value

    async def run(
        self, ctx: ChildContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        cfg = self.config.store
        path = self.config.store_path()
        store = await SqliteStore.open(
            path, synchronous_market=cfg.synchronous_market, busy_timeout_s=cfg.busy_timeout_s
        )
        log.info(
            "store %s open (schema v%d%s)",
            path,
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
                task_status.started()
                await ctx.wait_stop_requested()
                nursery.cancel_scope.cancel()
        finally:
            self.current.value = None
            with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await store.aclose()

    async def wait_store(self) -> SqliteStore:
        """The open store (waits while it is being opened)."""
        value = await self.current.wait_value(lambda v: v is not None)
        assert isinstance(value, SqliteStore)
        return value

    def check(self) -> tuple[HealthLevel, str | None]:
        store = self.store
        if store is None:
            return HealthLevel.DEGRADED, "store: not open"
        return store.check()

    def status(self) -> dict[str, Any] | None:
        store = self.store
        return store.status() if store is not None else None
