"""PostgreSQL for the store tests: is the server there, a fresh schema per test.

The server is ``TRADINGD_TEST_PG_DSN`` (default: 127.0.0.1:5432, database
``test``, user ``postgres``, trust auth — as on the development machine and
in CI). Each test gets its own schema ``t_<uuid>`` (the first of its
connections' ``search_path``), dropped afterwards, so tests are isolated and
can run in parallel. Without a server the PostgreSQL cases skip with the
reason; under ``TRADINGD_REQUIRE_SERVICES=1`` (CI) they fail instead.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from daemon.store import SqliteStore, inline_runner
from daemon.store.postgres import PostgresStore
from tests.helpers.store import WallClock, open_store

#: The backends the store suites run on.
BACKENDS = ("sqlite", "postgres")

#: The test server (no password: trust auth).
ADMIN_DSN = os.environ.get(
    "TRADINGD_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)


@functools.cache
def unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or ``None`` when it can."""
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {ADMIN_DSN!r} is unreachable: {str(exc).strip()}"
    return None


def require_postgres() -> None:
    """Skip (or, under ``TRADINGD_REQUIRE_SERVICES=1``, fail) without a server."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("TRADINGD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"TRADINGD_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the test database (outside any test schema)."""
    return psycopg.connect(ADMIN_DSN, autocommit=True)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new schema for one test; yields a DSN whose ``search_path`` is that schema."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield make_conninfo(ADMIN_DSN, options=f"-c search_path={schema}")
    finally:
        with admin() as conn:
            # Terminate what a failed test left behind, then drop the schema.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND query LIKE %s",
                (f"%{schema}%",),
            )
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def q(backend: str, sql: str) -> str:
    """``sql`` written with SQLite's ``?`` placeholders, in ``backend``'s style."""
    return sql.replace("?", "%s") if backend == "postgres" else sql


async def open_backend(backend: str, tmp_path: Path, **kwargs: Any) -> SqliteStore | PostgresStore:
    """A store of ``backend`` with the inline runner (PostgreSQL needs ``dsn=``)."""
    kwargs.setdefault("runner", inline_runner)
    kwargs.setdefault("wall_clock", WallClock())
    if backend == "postgres":
        return await PostgresStore.open(kwargs.pop("dsn"), **kwargs)
    kwargs.pop("dsn", None)
    return await open_store(tmp_path / "store.db", **kwargs)
