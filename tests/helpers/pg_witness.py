"""The process tests' PostgreSQL witness: the daemon's schema read back with plain psycopg.

With ``[store] backend = "postgres"`` the daemon under test writes a fresh
schema of the test server (:func:`tests.store.pg.fresh_schema`: ``t_<uuid>``,
the first of the DSN's ``search_path``, dropped afterwards). The tests judge
it through :class:`PgReadOnly`: one psycopg connection of the test's own, in a
``READ ONLY`` session (every statement its own read-only transaction, so each
query sees what the daemon has committed by then), never :mod:`daemon.store`.
It answers the same SQLite-style queries as
:class:`~tests.helpers.process.ReadOnlyDatabase` (``?`` placeholders are
rewritten), so :class:`~tests.helpers.capture.StoreReader` and
:class:`~tests.helpers.orders_process.OrderStoreReader` read either backend.

:func:`store_under_test` is the witness factory of the parametrised module
fixtures: the ``[store]`` table to give the daemon and the witness of that
store, for ``"sqlite"`` or ``"postgres"``. Without a server the PostgreSQL
runs skip with the reason (fail under ``TRADINGD_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers.process import StoreUnderTest, sqlite_store
from tests.store.pg import fresh_schema, require_postgres

__all__ = ["BACKENDS", "PgReadOnly", "require_backend", "store_under_test"]

#: The store backends the crash tests run on.
BACKENDS = ("sqlite", "postgres")


class PgReadOnly:
    """Blocking read-only queries on the daemon's PostgreSQL schema (run them in a thread).

    One connection, opened on first use and again after it broke (its calls
    are serialised by psycopg's own lock, so threads may share it); the
    session is ``READ ONLY``: nothing here can change the daemon's tables.
    """

    backend = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                self._conn = conn
            return self._conn

    @staticmethod
    def _sql(sql: str) -> str:
        """SQLite's ``?`` placeholders in psycopg's style."""
        return sql.replace("?", "%s")

    def exists(self) -> bool:
        """Whether the daemon has migrated the schema (all tables appear in one transaction)."""
        row = self._connection().execute("SELECT to_regclass('schema_migrations')").fetchone()
        return row is not None and row[0] is not None

    def describe(self) -> str:
        return f"PostgreSQL {self.dsn}"

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Every row of one query."""
        return self._connection().execute(self._sql(sql), tuple(params)).fetchall()

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Any:
        """The first row of one query (``None``: no row)."""
        return self._connection().execute(self._sql(sql), tuple(params)).fetchone()

    def fetchall_if_created(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of ``sql``; none before the daemon created its tables."""
        try:
            return self.fetchall(sql, params)
        except psycopg.errors.UndefinedTable:
            return []

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def require_backend(backend: str) -> None:
    """Skip (or fail, under ``TRADINGD_REQUIRE_SERVICES=1``) a run its server cannot serve.

    Call it in the module fixture, before the scenario's ``trio.run``.
    """
    if backend == "postgres":
        require_postgres()
    elif backend != "sqlite":
        raise ValueError(f"unknown store backend {backend!r}")


@contextmanager
def store_under_test(backend: str, state_dir: Path, db_name: str) -> Iterator[StoreUnderTest]:
    """The daemon's ``[store]`` table and its witness, for the block.

    ``"sqlite"``: the file ``db_name`` under ``state_dir``, read with
    ``mode=ro``. ``"postgres"``: a fresh schema of the test server (dropped
    at the end of the block), read by :class:`PgReadOnly`.
    """
    require_backend(backend)
    if backend == "sqlite":
        yield sqlite_store(state_dir, db_name)
        return
    with fresh_schema() as dsn:
        witness = PgReadOnly(dsn)
        try:
            yield StoreUnderTest(
                "postgres", f'backend = "postgres"\ndsn = {json.dumps(dsn)}\n', witness
            )
        finally:
            witness.close()
