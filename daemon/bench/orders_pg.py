"""The orders bench's raw baseline on PostgreSQL: two committed single-row INSERTs per order.

With ``tradingd bench orders --store postgres`` tradingd's store is a fresh
schema on a PostgreSQL server (:mod:`daemon.bench.pg`), and the raw
baseline's two durable commits go to the same server, so that the latency
ratio compares like with like: :class:`PgCommits` is a plain psycopg
connection (autocommit, so each transaction is spelled out: ``BEGIN``; one
``INSERT``; ``COMMIT``, as tradingd's store lane spells its own) with
``synchronous_commit = on`` for the session — a COMMIT returns once the
server has flushed its WAL, as tradingd's order writes (CRITICAL) do. The
rows go to a table of the baseline's own, :data:`TABLE`, in the run's
schema.

The load generator process runs it (:mod:`daemon.bench.orders_load`): the
bench hands it a :class:`PgTarget` — the DSN with the schema's
``search_path`` and the path of the password file, never the password.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import attrs
import psycopg

from daemon.bench.common import BenchError
from daemon.errors import SecretError
from daemon.secrets import SecretRef, resolve
from daemon.store.pg_errors import public_dsn

__all__ = ["TABLE", "PgCommits", "PgTarget"]

#: The baseline's table in the run's schema (tradingd's tables are beside it).
TABLE: Final = "bench_baseline_orders"
#: Bound of connecting (seconds).
CONNECT_TIMEOUT_S: Final = 10


@attrs.frozen
class PgTarget:
    """Where the baseline commits: a DSN (no password) and, optionally, a password file."""

    dsn: str
    password_file: str | None = None

    @classmethod
    def from_command(cls, command: Mapping[str, Any]) -> PgTarget | None:
        """The target of a load-generator command (``pg_dsn``, ``pg_password_file``), if any."""
        dsn = command.get("pg_dsn")
        if not dsn:
            return None
        return cls(str(dsn), command.get("pg_password_file"))

    def to_command(self) -> dict[str, str]:
        """The keys :meth:`from_command` reads."""
        out = {"pg_dsn": self.dsn}
        if self.password_file is not None:
            out["pg_password_file"] = self.password_file
        return out


class PgCommits:
    """The baseline's durable side on PostgreSQL (blocking: call from one worker thread)."""

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}
        if self.target.password_file is not None:
            try:
                kwargs["password"] = resolve(SecretRef("file", self.target.password_file)).reveal()
            except SecretError as exc:
                raise BenchError(f"baseline: the PostgreSQL password: {exc}") from None
        try:
            conn = psycopg.connect(self.target.dsn, **kwargs)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise BenchError(
                f"baseline: cannot connect to PostgreSQL at {public_dsn(self.target.dsn)!r}: "
                f"{type(exc).__name__}: {first}"
            ) from None
        conn.execute("SET synchronous_commit = on")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGINT GENERATED ALWAYS AS IDENTITY "
            "PRIMARY KEY, client_order_id TEXT NOT NULL, kind TEXT NOT NULL, at_ms BIGINT NOT NULL)"
        )
        self._conn = conn

    def commit(self, client_order_id: str, kind: str) -> float:
        """One transaction; returns the seconds of its COMMIT statement (the WAL flush)."""
        conn = self._conn
        assert conn is not None, "open() first"
        conn.execute("BEGIN")
        conn.execute(
            f"INSERT INTO {TABLE} (client_order_id, kind, at_ms) VALUES (%s, %s, %s)",
            (client_order_id, kind, time.time_ns() // 1_000_000),
        )
        started = time.perf_counter()
        conn.execute("COMMIT")
        return time.perf_counter() - started

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
