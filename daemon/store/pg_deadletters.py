"""The ``dead_letters`` table in PostgreSQL: the statements behind the durable dead letters.

As SQLite's (:mod:`daemon.store.deadletters_sqlite`): a letter with a key is
merged into the stored one with the same ``(source, key)`` by an ``UPDATE``
(attempts add up, times widen, the newest payload and error win); ids come
from an identity column, so a purged id is never reused. Payloads are
``BYTEA``: JSON values as their compact UTF-8 text, ``bytes`` as they are.
Two daemons adding the same new keyed letter at once: the loser's ``INSERT``
meets the unique index inside a savepoint and merges instead.

Functions of a :class:`psycopg.Connection`, run inside the owner's transactions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import psycopg

from daemon.resilience.deadletter import DeadLetter
from daemon.store.deadletters_sqlite import COLUMNS, decode_letter, encode_payload

__all__ = [
    "add_letter",
    "count_letters",
    "get_letter",
    "list_letters",
    "purge_letters",
    "record_failed_replay",
    "remove_letter",
]

Conn = Any  # psycopg.Connection

_INSERT: Final = (
    "INSERT INTO dead_letters (source, key, payload_kind, payload, error_type, error_message, "
    "attempts, first_failed_at, last_failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
    f"RETURNING {COLUMNS}"
)
_MERGE: Final = (
    "UPDATE dead_letters SET payload_kind = %s, payload = %s, error_type = %s, "
    "error_message = %s, attempts = attempts + %s, "
    "first_failed_at = LEAST(first_failed_at, %s), last_failed_at = GREATEST(last_failed_at, %s) "
    f"WHERE source = %s AND key = %s RETURNING {COLUMNS}"
)
_FAILED_REPLAY: Final = (
    "UPDATE dead_letters SET error_type = %s, error_message = %s, attempts = attempts + 1, "
    f"last_failed_at = GREATEST(last_failed_at, %s) WHERE letter_id = %s RETURNING {COLUMNS}"
)


def add_letter(conn: Conn, letter: DeadLetter) -> DeadLetter:
    """Store ``letter``, or merge it into the stored one with the same source and key."""
    kind, payload = encode_payload(letter.payload)
    stored = payload.encode("utf-8") if isinstance(payload, str) else payload
    values = (kind, stored, letter.error_type, letter.error_message, letter.attempts)
    times = (letter.first_failed_at, letter.last_failed_at)
    merge = (*values, *times, letter.source, letter.key)
    if letter.key is not None:
        row = conn.execute(_MERGE, merge).fetchone()
        if row is not None:
            return decode_letter(row)
        try:
            with conn.transaction():  # a savepoint: a concurrent insert of the key wins
                return decode_letter(
                    conn.execute(_INSERT, (letter.source, letter.key, *values, *times)).fetchone()
                )
        except psycopg.errors.UniqueViolation:
            return decode_letter(conn.execute(_MERGE, merge).fetchone())
    return decode_letter(conn.execute(_INSERT, (letter.source, None, *values, *times)).fetchone())


def list_letters(conn: Conn, *, source: str | None, after_id: int, limit: int) -> list[DeadLetter]:
    """Letters by ascending id after ``after_id`` (of one source when given)."""
    clauses = ["letter_id > %s"]
    args: list[Any] = [after_id]
    if source is not None:
        clauses.append("source = %s")
        args.append(source)
    args.append(limit)
    sql = (
        f"SELECT {COLUMNS} FROM dead_letters WHERE {' AND '.join(clauses)} "
        "ORDER BY letter_id LIMIT %s"
    )
    return [decode_letter(row) for row in conn.execute(sql, args)]


def get_letter(conn: Conn, letter_id: int) -> DeadLetter | None:
    """One letter, or ``None``."""
    row = conn.execute(
        f"SELECT {COLUMNS} FROM dead_letters WHERE letter_id = %s", (letter_id,)
    ).fetchone()
    return None if row is None else decode_letter(row)


def count_letters(conn: Conn, source: str | None) -> int:
    """How many letters are stored (of one source when given)."""
    if source is None:
        row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source = %s", (source,)
        ).fetchone()
    return int(row[0])


def record_failed_replay(
    conn: Conn, letter_id: int, error_type: str, error_message: str, at: float
) -> DeadLetter | None:
    """Count one more failed attempt with its error; ``None`` if the letter is gone."""
    row = conn.execute(_FAILED_REPLAY, (error_type, error_message, at, letter_id)).fetchone()
    return None if row is None else decode_letter(row)


def remove_letter(conn: Conn, letter_id: int) -> None:
    """Delete one letter (a successful replay)."""
    conn.execute("DELETE FROM dead_letters WHERE letter_id = %s", (letter_id,))


def purge_letters(
    conn: Conn,
    *,
    keep: Collection[int],
    letter_ids: Collection[int] | None,
    source: str | None,
    failed_before: float | None,
) -> int:
    """Delete the letters matching every given filter except those in ``keep``; how many."""
    clauses = ["NOT (letter_id = ANY(%s))"]
    args: list[Any] = [[int(i) for i in keep]]
    if letter_ids is not None:
        clauses.append("letter_id = ANY(%s)")
        args.append([int(i) for i in letter_ids])
    if source is not None:
        clauses.append("source = %s")
        args.append(source)
    if failed_before is not None:
        clauses.append("last_failed_at < %s")
        args.append(failed_before)
    cursor = conn.execute(f"DELETE FROM dead_letters WHERE {' AND '.join(clauses)}", args)
    return int(cursor.rowcount)
