"""The ``dead_letters`` table in SQLite: the statements behind the durable dead letters.

:class:`~daemon.store.deadletters.SqliteDeadLetterStore` (the facade, no SQL)
runs these inside the owner's transactions. A letter with a key is merged
into the stored one with the same ``(source, key)`` by an ``UPDATE`` (an
upsert would consume an ``AUTOINCREMENT`` value each time, and ids would jump
where the reference store's do not); ids come from ``AUTOINCREMENT``, so a
purged id is never reused. JSON payloads are stored as JSON text, ``bytes``
as a BLOB, with their kind.

Pure functions of a :class:`sqlite3.Connection` (see :mod:`daemon.store.dialect`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, Final

from daemon.resilience.deadletter import DeadLetter, JsonValue

__all__ = [
    "COLUMNS",
    "add_letter",
    "count_letters",
    "decode_letter",
    "encode_payload",
    "get_letter",
    "list_letters",
    "purge_letters",
    "record_failed_replay",
    "remove_letter",
]

#: The columns every statement returns, in :func:`decode_letter`'s order.
COLUMNS: Final = (
    "letter_id, source, key, payload_kind, payload, error_type, error_message, attempts, "
    "first_failed_at, last_failed_at"
)
_INSERT: Final = (
    "INSERT INTO dead_letters (source, key, payload_kind, payload, error_type, error_message, "
    "attempts, first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    f"RETURNING {COLUMNS}"
)
_MERGE: Final = (
    "UPDATE dead_letters SET payload_kind = ?, payload = ?, error_type = ?, error_message = ?, "
    "attempts = attempts + ?, first_failed_at = min(first_failed_at, ?), "
    "last_failed_at = max(last_failed_at, ?) "
    f"WHERE source = ? AND key = ? RETURNING {COLUMNS}"
)
_FAILED_REPLAY: Final = (
    "UPDATE dead_letters SET error_type = ?, error_message = ?, attempts = attempts + 1, "
    f"last_failed_at = max(last_failed_at, ?) WHERE letter_id = ? RETURNING {COLUMNS}"
)


def encode_payload(payload: JsonValue | bytes) -> tuple[str, str | bytes]:
    """``(payload_kind, stored payload)``: bytes as they are, JSON values as compact text."""
    if isinstance(payload, bytes):
        return "bytes", payload
    return "json", json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def decode_letter(row: Sequence[Any]) -> DeadLetter:
    """The letter of a row holding :data:`COLUMNS`."""
    kind, raw = row[3], row[4]
    payload: JsonValue | bytes
    if kind == "bytes":
        payload = bytes(raw)
    else:
        payload = json.loads(bytes(raw).decode("utf-8") if not isinstance(raw, str) else raw)
    return DeadLetter(
        letter_id=row[0],
        source=row[1],
        key=row[2],
        payload=payload,
        error_type=row[5],
        error_message=row[6],
        attempts=row[7],
        first_failed_at=float(row[8]),
        last_failed_at=float(row[9]),
    )


def add_letter(conn: sqlite3.Connection, letter: DeadLetter) -> DeadLetter:
    """Store ``letter``, or merge it into the stored one with the same source and key."""
    kind, payload = encode_payload(letter.payload)
    values = (kind, payload, letter.error_type, letter.error_message, letter.attempts)
    times = (letter.first_failed_at, letter.last_failed_at)
    if letter.key is not None:
        row = conn.execute(_MERGE, (*values, *times, letter.source, letter.key)).fetchone()
        if row is not None:
            return decode_letter(row)
    return decode_letter(
        conn.execute(_INSERT, (letter.source, letter.key, *values, *times)).fetchone()
    )


def list_letters(
    conn: sqlite3.Connection, *, source: str | None, after_id: int, limit: int
) -> list[DeadLetter]:
    """Letters by ascending id after ``after_id`` (of one source when given)."""
    clauses = ["letter_id > ?"]
    args: list[Any] = [after_id]
    if source is not None:
        clauses.append("source = ?")
        args.append(source)
    args.append(limit)
    sql = (
        f"SELECT {COLUMNS} FROM dead_letters WHERE {' AND '.join(clauses)} "
        "ORDER BY letter_id LIMIT ?"
    )
    return [decode_letter(row) for row in conn.execute(sql, args)]


def get_letter(conn: sqlite3.Connection, letter_id: int) -> DeadLetter | None:
    """One letter, or ``None``."""
    row = conn.execute(
        f"SELECT {COLUMNS} FROM dead_letters WHERE letter_id = ?", (letter_id,)
    ).fetchone()
    return None if row is None else decode_letter(row)


def count_letters(conn: sqlite3.Connection, source: str | None) -> int:
    """How many letters are stored (of one source when given)."""
    if source is None:
        row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source = ?", (source,)
        ).fetchone()
    return int(row[0])


def record_failed_replay(
    conn: sqlite3.Connection, letter_id: int, error_type: str, error_message: str, at: float
) -> DeadLetter | None:
    """Count one more failed attempt with its error; ``None`` if the letter is gone."""
    row = conn.execute(_FAILED_REPLAY, (error_type, error_message, at, letter_id)).fetchone()
    return None if row is None else decode_letter(row)


def remove_letter(conn: sqlite3.Connection, letter_id: int) -> None:
    """Delete one letter (a successful replay)."""
    conn.execute("DELETE FROM dead_letters WHERE letter_id = ?", (letter_id,))


def purge_letters(
    conn: sqlite3.Connection,
    *,
    keep: Collection[int],
    letter_ids: Collection[int] | None,
    source: str | None,
    failed_before: float | None,
) -> int:
    """Delete the letters matching every given filter except those in ``keep``; how many."""
    clauses = ["letter_id NOT IN (SELECT value FROM json_each(?))"]
    args: list[Any] = [json.dumps(sorted(keep))]
    if letter_ids is not None:
        clauses.append("letter_id IN (SELECT value FROM json_each(?))")
        args.append(json.dumps([int(i) for i in letter_ids]))
    if source is not None:
        clauses.append("source = ?")
        args.append(source)
    if failed_before is not None:
        clauses.append("last_failed_at < ?")
        args.append(failed_before)
    return conn.execute(f"DELETE FROM dead_letters WHERE {' AND '.join(clauses)}", args).rowcount
