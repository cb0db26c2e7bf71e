"""Versioned schema migrations, applied at open inside one transaction.

The schema version lives in SQLite's ``PRAGMA user_version`` (stored in the
file header, so it changes atomically with the migration's transaction), and
every applied migration is also logged in ``schema_migrations`` for
operators. ``PRAGMA application_id`` marks the file as tradingd's, so a
database of another program is refused instead of being "migrated".

Rules, because a trading store must never be damaged by an upgrade or a
downgrade:

* a file whose version is **newer** than the code is refused with
  :class:`~daemon.store.errors.StoreVersionError` *before anything is written*;
* pending migrations run in one ``BEGIN IMMEDIATE`` transaction: either the
  file reaches the code's version, or it is left exactly as it was
  (:class:`~daemon.store.errors.StoreMigrationError`);
* migrations are append-only: a released migration is never edited, a change
  is a new version.

Conventions of the schema: natural unique keys everywhere writes must be
idempotent; prices and quantities as ``TEXT`` decimals (exact, the venue's own
spelling); times as integer epoch milliseconds with the unit in the name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs

from daemon.store.errors import (
    StoreCorruptError,
    StoreMigrationError,
    StoreOpenError,
    StoreUnavailableError,
    StoreVersionError,
    translate_error,
)

__all__ = [
    "APPLICATION_ID",
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "check_file",
    "migrate",
    "schema_version",
]

#: ``PRAGMA application_id`` of tradingd databases ("TRAD").
APPLICATION_ID = 0x54524144


@attrs.frozen
class Migration:
    """One schema step: statements that take the schema from ``version - 1`` to ``version``.

    Statements are executed one by one inside the migration transaction
    (never with ``executescript``, which would commit on its own).
    """

    version: int
    name: str
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    "market data, checkpoints, gaps, dead letters",
    (
        """
        CREATE TABLE schema_migrations (
            version       INTEGER PRIMARY KEY,
            name          TEXT    NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )
        """,
        # One row per venue trade; the natural key makes re-delivery idempotent.
        # WITHOUT ROWID: the key *is* the storage order, so range scans by trade id
        # (gap detection, retention) read contiguous pages.
        """
        CREATE TABLE trades (
            venue          TEXT    NOT NULL CHECK (venue <> ''),
            symbol         TEXT    NOT NULL CHECK (symbol <> ''),
            trade_id       INTEGER NOT NULL CHECK (trade_id >= 0),
            price          TEXT    NOT NULL,
            quantity       TEXT    NOT NULL,
            quote_quantity TEXT    NOT NULL,
            buyer_is_maker INTEGER NOT NULL CHECK (buyer_is_maker IN (0, 1)),
            trade_time_ms  INTEGER NOT NULL,
            event_time_ms  INTEGER,
            ingested_at_ms INTEGER NOT NULL,
            PRIMARY KEY (venue, symbol, trade_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE book_snapshots (
            snapshot_id    INTEGER PRIMARY KEY,
            venue          TEXT    NOT NULL CHECK (venue <> ''),
            symbol         TEXT    NOT NULL CHECK (symbol <> ''),
            server_time_ms INTEGER NOT NULL,
            sequence_id    INTEGER NOT NULL,
            bid_levels     INTEGER NOT NULL CHECK (bid_levels >= 0),
            ask_levels     INTEGER NOT NULL CHECK (ask_levels >= 0),
            ingested_at_ms INTEGER NOT NULL,
            UNIQUE (venue, symbol, server_time_ms, sequence_id)
        )
        """,
        """
        CREATE TABLE book_levels (
            snapshot_id INTEGER NOT NULL
                REFERENCES book_snapshots (snapshot_id) ON DELETE CASCADE,
            side        TEXT    NOT NULL CHECK (side IN ('bid', 'ask')),
            level_index INTEGER NOT NULL CHECK (level_index >= 0),
            price       TEXT    NOT NULL,
            quantity    TEXT    NOT NULL,
            PRIMARY KEY (snapshot_id, side, level_index)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE ingest_checkpoints (
            venue         TEXT    NOT NULL,
            symbol        TEXT    NOT NULL,
            stream        TEXT    NOT NULL,
            last_trade_id INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            PRIMARY KEY (venue, symbol, stream)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE gaps (
            gap_id         INTEGER PRIMARY KEY,
            venue          TEXT    NOT NULL,
            symbol         TEXT    NOT NULL,
            stream         TEXT    NOT NULL,
            from_id        INTEGER NOT NULL,
            to_id          INTEGER NOT NULL CHECK (to_id >= from_id),
            detected_at_ms INTEGER NOT NULL,
            state          TEXT    NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'backfilled', 'unrecoverable')),
            reason         TEXT    NOT NULL DEFAULT '',
            resolution     TEXT,
            resolved_at_ms INTEGER,
            UNIQUE (venue, symbol, stream, from_id, to_id)
        )
        """,
        "CREATE INDEX gaps_by_state ON gaps (state, venue, symbol)",
        # AUTOINCREMENT: a purged letter's id is never handed out again, so an
        # operator's "replay 42" can never hit a different letter.
        """
        CREATE TABLE dead_letters (
            letter_id       INTEGER PRIMARY KEY AUTOINCREMENT,
            source          TEXT    NOT NULL CHECK (source <> ''),
            key             TEXT,
            payload_kind    TEXT    NOT NULL CHECK (payload_kind IN ('json', 'bytes')),
            payload         BLOB    NOT NULL,
            error_type      TEXT    NOT NULL,
            error_message   TEXT    NOT NULL,
            attempts        INTEGER NOT NULL CHECK (attempts >= 1),
            first_failed_at REAL    NOT NULL,
            last_failed_at  REAL    NOT NULL
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
        # The outbox (docs/ARCHITECTURE.md §4 Orders): one row per intent, keyed
        # by the deterministic client order id, so a resubmitted message can
        # never become a second row. ``seq`` is the submission order (assigned
        # max + 1 inside the inserting transaction), which recovery and
        # per-account dispatch follow.
        # The key the id is derived from is unique as well: a change of the
        # derivation scheme must not let one message become two intents.
        f"""
        CREATE TABLE order_intents (
            client_order_id        TEXT    PRIMARY KEY CHECK (client_order_id <> ''),
            seq                    INTEGER NOT NULL UNIQUE CHECK (seq >= 1),
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
            created_at_ms          INTEGER NOT NULL,
            updated_at_ms          INTEGER NOT NULL,
            sent_at_ms             INTEGER,
            send_attempts          INTEGER NOT NULL DEFAULT 0 CHECK (send_attempts >= 0),
            venue_order_id         INTEGER,
            executed_qty           TEXT    NOT NULL DEFAULT '0',
            cum_quote_qty          TEXT    NOT NULL DEFAULT '0',
            reject_code            INTEGER,
            reject_reason          TEXT,
            cancel_requested_at_ms INTEGER,
            UNIQUE (account, message_id, symbol)
        )
        """,
        # Start-up recovery and the executor scan the non-terminal states in seq order.
        "CREATE INDEX order_intents_by_state ON order_intents (state, seq)",
        # The admin API lists one account's intents newest first.
        "CREATE INDEX order_intents_by_account ON order_intents (account, seq)",
        # Venue reports (user data stream, open-order lists) name the venue's id.
        "CREATE INDEX order_intents_by_venue_id ON order_intents (venue, venue_order_id)",
        # Every state change is a durable row; ``seq`` counts 1..n per order.
        f"""
        CREATE TABLE order_history (
            client_order_id TEXT    NOT NULL REFERENCES order_intents (client_order_id),
            seq             INTEGER NOT NULL CHECK (seq >= 1),
            from_state      TEXT    CHECK (from_state IS NULL OR from_state IN ({_ORDER_STATES})),
            to_state        TEXT    NOT NULL CHECK (to_state IN ({_ORDER_STATES})),
            reason          TEXT    NOT NULL,
            at_ms           INTEGER NOT NULL,
            PRIMARY KEY (client_order_id, seq)
        ) WITHOUT ROWID
        """,
        # Fills keyed by the venue's trade id: the same execution reported twice
        # (the order's answer, a poll, the user data stream) is stored once. No
        # foreign key to order_intents: a fill the venue reports is a fact even
        # when the order is one the store does not know (reconciliation reports it).
        """
        CREATE TABLE order_fills (
            venue            TEXT    NOT NULL CHECK (venue <> ''),
            symbol           TEXT    NOT NULL CHECK (symbol <> ''),
            trade_id         INTEGER NOT NULL,
            client_order_id  TEXT    NOT NULL,
            account          TEXT    NOT NULL CHECK (account <> ''),
            venue_order_id   INTEGER NOT NULL,
            side             TEXT    NOT NULL CHECK (side IN ('BUY', 'SELL')),
            price            TEXT    NOT NULL,
            quantity         TEXT    NOT NULL,
            quote_quantity   TEXT    NOT NULL,
            commission       TEXT    NOT NULL,
            commission_asset TEXT    NOT NULL,
            time_ms          INTEGER NOT NULL,
            is_maker         INTEGER CHECK (is_maker IS NULL OR is_maker IN (0, 1)),
            PRIMARY KEY (venue, symbol, trade_id)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX order_fills_by_order ON order_fills (client_order_id)",
        # Signed base quantity per account and symbol, moved in the same
        # transaction as the fills that change it (and only by new fills).
        """
        CREATE TABLE positions (
            account       TEXT    NOT NULL,
            symbol        TEXT    NOT NULL,
            quantity      TEXT    NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            PRIMARY KEY (account, symbol)
        ) WITHOUT ROWID
        """,
        # Operator decisions (halt/reduce/resume) must survive a restart: a halt
        # that a crash silently lifted would be worse than no halt at all.
        """
        CREATE TABLE trading_states (
            scope         TEXT    PRIMARY KEY CHECK (scope <> ''),
            state         TEXT    NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
            reason        TEXT    NOT NULL,
            changed_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)

_V3 = Migration(
    3,
    "account leases",
    (
        # One row per account: which daemon trades it (docs/ARCHITECTURE.md §4
        # Orders, "Several daemons"). ``owner`` is a daemon's instance id,
        # ``holder`` one run of it, ``token`` the fencing token (it only grows),
        # times on the store's clock. See daemon/store/lease_rules.py.
        """
        CREATE TABLE account_leases (
            account        TEXT    PRIMARY KEY CHECK (account <> ''),
            owner          TEXT    NOT NULL,
            holder         TEXT    NOT NULL,
            token          INTEGER NOT NULL CHECK (token >= 0),
            expires_at_ms  INTEGER NOT NULL,
            acquired_at_ms INTEGER NOT NULL,
            renewed_at_ms  INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)

_V4 = Migration(
    4,
    "a fill is one side of a trade",
    (
        # A trade between two orders of the same account (a self-trade: the venue's
        # selfTradePreventionMode NONE, Binance's documented default) is two executions
        # with one trade id, a BUY and a SELL. Keyed by the trade id alone, the second was
        # dropped as a copy of the first. The table is rebuilt on the new key (SQLite
        # cannot change a primary key in place); its rows are kept as they are.
        """
        CREATE TABLE order_fills_v4 (
            venue            TEXT    NOT NULL CHECK (venue <> ''),
            symbol           TEXT    NOT NULL CHECK (symbol <> ''),
            trade_id         INTEGER NOT NULL,
            client_order_id  TEXT    NOT NULL,
            account          TEXT    NOT NULL CHECK (account <> ''),
            venue_order_id   INTEGER NOT NULL,
            side             TEXT    NOT NULL CHECK (side IN ('BUY', 'SELL')),
            price            TEXT    NOT NULL,
            quantity         TEXT    NOT NULL,
            quote_quantity   TEXT    NOT NULL,
            commission       TEXT    NOT NULL,
            commission_asset TEXT    NOT NULL,
            time_ms          INTEGER NOT NULL,
            is_maker         INTEGER CHECK (is_maker IS NULL OR is_maker IN (0, 1)),
            PRIMARY KEY (venue, symbol, trade_id, side)
        ) WITHOUT ROWID
        """,
        "INSERT INTO order_fills_v4 SELECT * FROM order_fills",
        "DROP TABLE order_fills",
        "ALTER TABLE order_fills_v4 RENAME TO order_fills",
        "CREATE INDEX order_fills_by_order ON order_fills (client_order_id)",
    ),
)

#: Every migration, in order. Append only.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4)

#: The schema version this code writes.
LATEST_VERSION = MIGRATIONS[-1].version


def _validate(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..N in order, got {versions}")


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (``PRAGMA user_version``; 0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_file(
    conn: sqlite3.Connection, path: str, *, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Refuse files this code must not touch; return the file's schema version.

    Reads only. Raises :class:`StoreVersionError` when the file is newer than
    the code, :class:`StoreOpenError` when it belongs to another application,
    and (through :func:`translate_error`) ``StoreCorruptError`` when it is not
    a database at all.
    """
    _validate(migrations)
    code_version = migrations[-1].version if migrations else 0
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = schema_version(conn)
    if application_id not in (0, APPLICATION_ID):
        raise StoreOpenError(
            f"store {path}: not a tradingd database (application_id {application_id:#x}, "
            f"expected {APPLICATION_ID:#x}); refusing to touch it",
            path=path,
        )
    if version > code_version:
        raise StoreVersionError(
            f"store {path}: schema version {version} is newer than this tradingd "
            f"(knows up to {code_version}); upgrade tradingd or use another file. "
            "The file was not modified.",
            path=path,
            file_version=version,
            code_version=code_version,
        )
    return version


def migrate(
    conn: sqlite3.Connection,
    path: str,
    *,
    now_ms: int,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> list[int]:
    """Apply pending migrations in one transaction; return the versions applied.

    The connection must be in autocommit mode (``isolation_level=None``) and
    outside a transaction. The version is read again after ``BEGIN IMMEDIATE``
    holds the write lock, so two processes opening the same new file cannot
    both migrate it.
    """
    _validate(migrations)
    conn.execute("BEGIN IMMEDIATE")
    applied: list[int] = []
    try:
        current = check_file(conn, path, migrations=migrations)
        for migration in migrations:
            if migration.version <= current:
                continue
            try:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now_ms),
                )
            except sqlite3.Error as exc:
                translated = translate_error(exc, path, action=f"migrating to {migration.version}")
                if isinstance(translated, StoreUnavailableError | StoreCorruptError):
                    raise translated from exc  # the environment, not the migration
                raise StoreMigrationError(
                    f"store {path}: migration {migration.version} ({migration.name}) failed: "
                    f"{exc}; rolled back, the file is unchanged",
                    path=path,
                ) from exc
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            applied.append(migration.version)
        if applied:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - the original error matters more
                pass
        raise
    return applied
