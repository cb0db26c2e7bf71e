"""PostgreSQL's versioned schema: the same tables as SQLite's, applied at open in one transaction.

The schema version is ``max(version)`` of ``schema_migrations``, a table that
carries the comment :data:`SCHEMA_MARK`, so a schema of another program is
refused instead of being "migrated". The rules are SQLite's
(:mod:`daemon.store.migrations`):

* a schema whose version is **newer** than the code is refused with
  :class:`~daemon.store.errors.StoreVersionError` before anything is written;
* pending migrations run in **one transaction** (PostgreSQL's DDL is
  transactional): either the schema reaches the code's version or it is left
  exactly as it was (:class:`~daemon.store.errors.StoreMigrationError`);
* the transaction first takes a transaction-level **advisory lock** keyed by
  the schema's name, and reads the version only then, so two daemons starting
  together against a new database cannot both migrate it: the second waits,
  then finds the schema current;
* migrations are append-only, numbered as SQLite's (version 2 here is
  version 2 there).

Dialect: ``BIGINT`` ids and times, decimals as ``TEXT`` in the venue's
spelling (exactly as SQLite keeps them: ``"0.00100000"`` stays as written),
flags as ``BOOLEAN``, ``BIGSERIAL``/identity ids (a purged dead letter's id
is never handed out again, like ``AUTOINCREMENT``), JSON and raw payloads
as ``BYTEA``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg

from daemon.store.errors import StoreMigrationError, StoreOpenError, StoreVersionError
from daemon.store.migrations import Migration

__all__ = [
    "LATEST_VERSION",
    "PG_MIGRATIONS",
    "SCHEMA_MARK",
    "check_schema",
    "migrate",
]

#: The comment on ``schema_migrations`` that marks a schema as tradingd's.
SCHEMA_MARK: Final = "tradingd schema"

_V1 = Migration(
    1,
    "market data, checkpoints, gaps, dead letters",
    (
        """
        CREATE TABLE schema_migrations (
            version       INTEGER PRIMARY KEY,
            name          TEXT    NOT NULL,
            applied_at_ms BIGINT  NOT NULL
        )
        """,
        f"COMMENT ON TABLE schema_migrations IS '{SCHEMA_MARK}'",
        """
        CREATE TABLE trades (
            venue          TEXT    NOT NULL CHECK (venue <> ''),
            symbol         TEXT    NOT NULL CHECK (symbol <> ''),
            trade_id       BIGINT  NOT NULL CHECK (trade_id >= 0),
            price          TEXT    NOT NULL,
            quantity       TEXT    NOT NULL,
            quote_quantity TEXT    NOT NULL,
            buyer_is_maker BOOLEAN NOT NULL,
            trade_time_ms  BIGINT  NOT NULL,
            event_time_ms  BIGINT,
            ingested_at_ms BIGINT  NOT NULL,
            PRIMARY KEY (venue, symbol, trade_id)
        )
        """,
        """
        CREATE TABLE book_snapshots (
            snapshot_id    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            venue          TEXT    NOT NULL CHECK (venue <> ''),
            symbol         TEXT    NOT NULL CHECK (symbol <> ''),
            server_time_ms BIGINT  NOT NULL,
            sequence_id    BIGINT  NOT NULL,
            bid_levels     INTEGER NOT NULL CHECK (bid_levels >= 0),
            ask_levels     INTEGER NOT NULL CHECK (ask_levels >= 0),
            ingested_at_ms BIGINT  NOT NULL,
            UNIQUE (venue, symbol, server_time_ms, sequence_id)
        )
        """,
        """
        CREATE TABLE book_levels (
            snapshot_id BIGINT  NOT NULL
                REFERENCES book_snapshots (snapshot_id) ON DELETE CASCADE,
            side        TEXT    NOT NULL CHECK (side IN ('bid', 'ask')),
            level_index INTEGER NOT NULL CHECK (level_index >= 0),
            price       TEXT    NOT NULL,
            quantity    TEXT    NOT NULL,
            PRIMARY KEY (snapshot_id, side, level_index)
        )
        """,
        """
        CREATE TABLE ingest_checkpoints (
            venue         TEXT   NOT NULL,
            symbol        TEXT   NOT NULL,
            stream        TEXT   NOT NULL,
            last_trade_id BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (venue, symbol, stream)
        )
        """,
        """
        CREATE TABLE gaps (
            gap_id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            venue          TEXT   NOT NULL,
            symbol         TEXT   NOT NULL,
            stream         TEXT   NOT NULL,
            from_id        BIGINT NOT NULL,
            to_id          BIGINT NOT NULL CHECK (to_id >= from_id),
            detected_at_ms BIGINT NOT NULL,
            state          TEXT   NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'backfilled', 'unrecoverable')),
            reason         TEXT   NOT NULL DEFAULT '',
            resolution     TEXT,
            resolved_at_ms BIGINT,
            UNIQUE (venue, symbol, stream, from_id, to_id)
        )
        """,
        "CREATE INDEX gaps_by_state ON gaps (state, venue, symbol)",
        """
        CREATE TABLE dead_letters (
            letter_id       BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            source          TEXT    NOT NULL CHECK (source <> ''),
            key             TEXT,
            payload_kind    TEXT    NOT NULL CHECK (payload_kind IN ('json', 'bytes')),
            payload         BYTEA   NOT NULL,
            error_type      TEXT    NOT NULL,
            error_message   TEXT    NOT NULL,
            attempts        INTEGER NOT NULL CHECK (attempts >= 1),
            first_failed_at DOUBLE PRECISION NOT NULL,
            last_failed_at  DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE UNIQUE INDEX dead_letters_by_key
            ON dead_letters (source, key) WHERE key IS NOT NULL
        """,
        "CREATE INDEX dead_letters_by_source ON dead_letters (source, letter_id)",
    ),
)

_ORDER_STATES = (
    "'PENDING', 'SENDING', 'ACCEPTED', 'REJECTED', 'UNKNOWN', "
    "'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'EXPIRED'"
)

_V2 = Migration(
    2,
    "orders: intents, history, fills, positions, trading states",
    (
        f"""
        CREATE TABLE order_intents (
            client_order_id        TEXT    PRIMARY KEY CHECK (client_order_id <> ''),
            seq                    BIGINT  NOT NULL UNIQUE CHECK (seq >= 1),
            message_id             TEXT    NOT NULL CHECK (message_id <> ''),
            account                TEXT    NOT NULL CHECK (account <> ''),
            venue                  TEXT    NOT NULL CHECK (venue <> ''),
            symbol                 TEXT    NOT NULL CHECK (symbol <> ''),
            side                   TEXT    NOT NULL CHECK (side IN ('BUY', 'SELL')),
            type                   TEXT    NOT NULL,
            quantity               TEXT    NOT NULL,
            price                  TEXT,
            time_in_force          TEXT,
            state                  TEXT    NOT NULL CHECK (state IN ({_ORDER_STATES})),
            created_at_ms          BIGINT  NOT NULL,
            updated_at_ms          BIGINT  NOT NULL,
            sent_at_ms             BIGINT,
            send_attempts          INTEGER NOT NULL DEFAULT 0 CHECK (send_attempts >= 0),
            venue_order_id         BIGINT,
            executed_qty           TEXT    NOT NULL DEFAULT '0',
            cum_quote_qty          TEXT    NOT NULL DEFAULT '0',
            reject_code            BIGINT,
            reject_reason          TEXT,
            cancel_requested_at_ms BIGINT,
            UNIQUE (account, message_id, symbol)
        )
        """,
        "CREATE INDEX order_intents_by_state ON order_intents (state, seq)",
        "CREATE INDEX order_intents_by_account ON order_intents (account, seq)",
        "CREATE INDEX order_intents_by_venue_id ON order_intents (venue, venue_order_id)",
        f"""
        CREATE TABLE order_history (
            client_order_id TEXT    NOT NULL REFERENCES order_intents (client_order_id),
            seq             INTEGER NOT NULL CHECK (seq >= 1),
            from_state      TEXT    CHECK (from_state IS NULL OR from_state IN ({_ORDER_STATES})),
            to_state        TEXT    NOT NULL CHECK (to_state IN ({_ORDER_STATES})),
            reason          TEXT    NOT NULL,
            at_ms           BIGINT  NOT NULL,
            PRIMARY KEY (client_order_id, seq)
        )
        """,
        """
        CREATE TABLE order_fills (
            venue            TEXT    NOT NULL CHECK (venue <> ''),
            symbol           TEXT    NOT NULL CHECK (symbol <> ''),
            trade_id         BIGINT  NOT NULL,
            client_order_id  TEXT    NOT NULL,
            account          TEXT    NOT NULL CHECK (account <> ''),
            venue_order_id   BIGINT  NOT NULL,
            side             TEXT    NOT NULL CHECK (side IN ('BUY', 'SELL')),
            price            TEXT    NOT NULL,
            quantity         TEXT    NOT NULL,
            quote_quantity   TEXT    NOT NULL,
            commission       TEXT    NOT NULL,
            commission_asset TEXT    NOT NULL,
            time_ms          BIGINT  NOT NULL,
            is_maker         BOOLEAN,
            PRIMARY KEY (venue, symbol, trade_id)
        )
        """,
        "CREATE INDEX order_fills_by_order ON order_fills (client_order_id)",
        """
        CREATE TABLE positions (
            account       TEXT   NOT NULL,
            symbol        TEXT   NOT NULL,
            quantity      TEXT   NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (account, symbol)
        )
        """,
        """
        CREATE TABLE trading_states (
            scope         TEXT   PRIMARY KEY CHECK (scope <> ''),
            state         TEXT   NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
            reason        TEXT   NOT NULL,
            changed_at_ms BIGINT NOT NULL
        )
        """,
    ),
)

_V3 = Migration(
    3,
    "account leases",
    (
        # See daemon/store/migrations.py (v3) and daemon/store/lease_rules.py.
        """
        CREATE TABLE account_leases (
            account        TEXT    PRIMARY KEY CHECK (account <> ''),
            owner          TEXT    NOT NULL,
            holder         TEXT    NOT NULL,
            token          BIGINT  NOT NULL CHECK (token >= 0),
            expires_at_ms  BIGINT  NOT NULL,
            acquired_at_ms BIGINT  NOT NULL,
            renewed_at_ms  BIGINT  NOT NULL
        )
        """,
    ),
)

_V4 = Migration(
    4,
    "a fill is one side of a trade",
    (
        # See daemon/store/migrations.py (v4): a self-trade is two executions, one trade id.
        "ALTER TABLE order_fills DROP CONSTRAINT order_fills_pkey",
        "ALTER TABLE order_fills ADD PRIMARY KEY (venue, symbol, trade_id, side)",
    ),
)

#: Every migration, in order. Append only; versions match SQLite's.
PG_MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4)

#: The schema version this code writes.
LATEST_VERSION = PG_MIGRATIONS[-1].version

# hashtext() of this plus the schema name keys the migration's advisory lock.
_LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtext('tradingd:migrate:' || current_schema()))"


def _validate(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..N in order, got {versions}")


def check_schema(
    conn: psycopg.Connection[Any], where: str, *, migrations: Sequence[Migration] = PG_MIGRATIONS
) -> int:
    """Refuse schemas this code must not touch; return the schema's version (0: new).

    Reads only. Raises :class:`StoreVersionError` when the schema is newer
    than the code and :class:`StoreOpenError` when ``schema_migrations``
    exists without tradingd's mark (another program's table).
    """
    _validate(migrations)
    code_version = migrations[-1].version if migrations else 0
    row = conn.execute(
        "SELECT c.oid, obj_description(c.oid, 'pg_class') FROM pg_class AS c "
        "WHERE c.relname = 'schema_migrations' AND c.relnamespace = current_schema()::regnamespace"
    ).fetchone()
    if row is None:
        return 0
    if row[1] != SCHEMA_MARK:
        raise StoreOpenError(
            f"store {where}: schema_migrations is not tradingd's (no {SCHEMA_MARK!r} mark); "
            "refusing to touch this schema",
            path=where,
        )
    found = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    version = int(found[0]) if found is not None else 0
    if version > code_version:
        raise StoreVersionError(
            f"store {where}: schema version {version} is newer than this tradingd "
            f"(knows up to {code_version}); upgrade tradingd or use another schema. "
            "Nothing was modified.",
            path=where,
            file_version=version,
            code_version=code_version,
        )
    return version


def migrate(
    conn: psycopg.Connection[Any],
    where: str,
    *,
    now_ms: int,
    migrations: Sequence[Migration] = PG_MIGRATIONS,
) -> tuple[list[int], int]:
    """Apply pending migrations in one transaction under the advisory lock.

    The connection must be in autocommit mode and outside a transaction.

    Returns:
        The versions applied and the schema version afterwards.

    Raises:
        StoreVersionError: the schema is newer than the code (nothing written).
        StoreOpenError: the schema is another program's.
        StoreMigrationError: a migration failed; rolled back, nothing changed.
        psycopg.Error: the server failed otherwise (the owner translates it).
    """
    _validate(migrations)
    applied: list[int] = []
    conn.execute("BEGIN")
    try:
        conn.execute(_LOCK_KEY)
        current = check_schema(conn, where, migrations=migrations)
        for migration in migrations:
            if migration.version <= current:
                continue
            try:
                with conn.transaction():  # a savepoint: the error names the migration
                    for statement in migration.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at_ms) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, now_ms),
                    )
            except psycopg.OperationalError:
                raise  # the server or the connection, not the migration
            except psycopg.Error as exc:
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise StoreMigrationError(
                    f"store {where}: migration {migration.version} ({migration.name}) failed: "
                    f"{first_line}; rolled back, the schema is unchanged",
                    path=where,
                ) from exc
            applied.append(migration.version)
        conn.execute("COMMIT")
    except BaseException:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:  # pragma: no cover - the original error matters more
                pass
        raise
    version = max([current, *applied])
    return applied, version
