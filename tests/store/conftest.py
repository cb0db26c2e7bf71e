"""The store fixtures: ``store`` runs every test on SQLite and on PostgreSQL.

``store`` is parametrised by backend: a fresh SQLite file, or a fresh
PostgreSQL schema (:mod:`tests.store.pg`; skipped with its reason when no
server is reachable, failed under ``TRADINGD_REQUIRE_SERVICES=1``). Blocking
calls run inline on both (autojump-safe). ``sqlite_store`` is for the cases
that are about SQLite itself (WAL, PRAGMAs, files).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.store import SqliteStore
from tests.helpers.store import WallClock, open_store
from tests.store.pg import BACKENDS, fresh_schema, open_backend


@pytest.fixture
def wall_clock() -> WallClock:
    return WallClock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of this run of the test."""
    return str(request.param)


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN on a fresh, private schema (dropped after the test)."""
    with fresh_schema() as dsn:
        yield dsn


@pytest.fixture
async def store(
    backend: str, tmp_path: Path, wall_clock: WallClock, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A fresh store of each backend (typed ``Any``: tests use the shared API)."""
    if backend == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        opened = await open_backend(backend, tmp_path, dsn=dsn, wall_clock=wall_clock)
    else:
        opened = await open_backend(backend, tmp_path, wall_clock=wall_clock)
    async with opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path, wall_clock: WallClock) -> AsyncIterator[SqliteStore]:
    """A fresh SQLite store (for the SQLite-only cases)."""
    opened = await open_store(tmp_path / "store.db", wall_clock=wall_clock)
    async with opened:
        yield opened
