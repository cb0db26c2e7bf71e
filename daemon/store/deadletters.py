"""The durable :class:`~daemon.resilience.DeadLetterStore`: dead letters in SQLite.

Same semantics as :class:`~daemon.resilience.InMemoryDeadLetterStore` (the
behavioural tests run against both), but a letter survives restarts and
``kill -9``: every change commits with ``synchronous=FULL``
(:attr:`~daemon.store.base.Durability.CRITICAL`) — a dead letter is often the
only remaining copy of a message.

* ``add`` merges into the stored letter with the same ``(source, key)``
  (attempts add up, times widen, the newest payload and error win), so a
  message that keeps failing stays one record; a unique index on
  ``(source, key)`` backs it.
* Ids come from ``AUTOINCREMENT``: a purged id is never reused.
* Payloads: JSON values as JSON text, raw ``bytes`` as a BLOB; the kind is
  stored, so both read back as they went in.
* ``replay`` runs the handler on the event loop (never inside the database
  lane) and marks the letter busy *in this process* meanwhile: a second
  replay gets ``BUSY`` and ``purge`` leaves it alone. Success deletes it;
  failure updates it (``attempts + 1``, the new error, ``last_failed_at``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from daemon.resilience.deadletter import (
    DeadLetter,
    JsonValue,
    PurgeFilters,
    ReplayHandler,
    ReplayResult,
    ReplayStatus,
)
from daemon.store.base import Durability, StoreOwner

__all__ = ["SqliteDeadLetterStore"]

_COLUMNS = (
    "letter_id, source, key, payload_kind, payload, error_type, error_message, attempts, "
    "first_failed_at, last_failed_at"
)
_INSERT = (
    "INSERT INTO dead_letters (source, key, payload_kind, payload, error_type, error_message, "
    "attempts, first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    f"RETURNING {_COLUMNS}"
)
# A merge is an UPDATE, not an upsert: an upsert would consume an AUTOINCREMENT
# value each time, and ids would jump where the reference store's do not.
_MERGE = (
    "UPDATE dead_letters SET payload_kind = ?, payload = ?, error_type = ?, error_message = ?, "
    "attempts = attempts + ?, first_failed_at = min(first_failed_at, ?), "
    "last_failed_at = max(last_failed_at, ?) "
    f"WHERE source = ? AND key = ? RETURNING {_COLUMNS}"
)
_FAILED_REPLAY = (
    "UPDATE dead_letters SET error_type = ?, error_message = ?, attempts = attempts + 1, "
    f"last_failed_at = max(last_failed_at, ?) WHERE letter_id = ? RETURNING {_COLUMNS}"
)


def _encode(payload: JsonValue | bytes) -> tuple[str, str | bytes]:
    if isinstance(payload, bytes):
        return "bytes", payload
    return "json", json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def _letter(row: Sequence[Any]) -> DeadLetter:
    kind, raw = row[3], row[4]
    payload: JsonValue | bytes
    if kind == "bytes":
        payload = bytes(raw)
    else:
        payload = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
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


class SqliteDeadLetterStore:
    """Dead letters in the store's ``dead_letters`` table (``store.dead_letters``).

    Use the store's instance: the "being replayed" marks live in it.

    Args:
        store: The owner of the database.
        now: Wall clock (epoch seconds) stamped on failed replays.
    """

    def __init__(
        self, store: StoreOwner[sqlite3.Connection], *, now: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._now = now
        self._replaying: set[int] = set()

    async def add(self, letter: DeadLetter) -> DeadLetter:
        """Store ``letter`` or merge it into the one with the same source and key."""
        kind, payload = _encode(letter.payload)
        values = (kind, payload, letter.error_type, letter.error_message, letter.attempts)
        times = (letter.first_failed_at, letter.last_failed_at)

        def fn(conn: sqlite3.Connection) -> DeadLetter:
            if letter.key is not None:
                row = conn.execute(_MERGE, (*values, *times, letter.source, letter.key)).fetchone()
                if row is not None:
                    return _letter(row)
            insert = (letter.source, letter.key, *values, *times)
            return _letter(conn.execute(_INSERT, insert).fetchone())

        return await self._store.write(
            fn, durability=Durability.CRITICAL, action="adding a dead letter"
        )

    async def list(
        self, *, source: str | None = None, after_id: int | None = None, limit: int = 100
    ) -> Sequence[DeadLetter]:
        """Letters by ascending id, optionally of one source, after an id (paging)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        clauses = ["letter_id > ?"]
        args: list[Any] = [0 if after_id is None else after_id]
        if source is not None:
            clauses.append("source = ?")
            args.append(source)
        args.append(limit)
        sql = (
            f"SELECT {_COLUMNS} FROM dead_letters WHERE {' AND '.join(clauses)} "
            "ORDER BY letter_id LIMIT ?"
        )

        def fn(conn: sqlite3.Connection) -> Sequence[DeadLetter]:
            return [_letter(row) for row in conn.execute(sql, args)]

        return await self._store.read(fn, action="listing dead letters")

    async def get(self, letter_id: int) -> DeadLetter | None:
        """One letter, or ``None``."""

        def fn(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE letter_id = ?", (letter_id,)
            ).fetchone()
            return None if row is None else _letter(row)

        return await self._store.read(fn, action="reading a dead letter")

    async def count(self, *, source: str | None = None) -> int:
        """How many letters are stored (of one source), for metrics and the CLI."""

        def fn(conn: sqlite3.Connection) -> int:
            if source is None:
                row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM dead_letters WHERE source = ?", (source,)
                ).fetchone()
            return int(row[0])

        return await self._store.read(fn, action="counting dead letters")

    async def replay(self, letter_id: int, handler: ReplayHandler) -> ReplayResult:
        """Hand a letter to ``handler``; remove it on success, update it on failure."""
        if letter_id in self._replaying:
            current = await self.get(letter_id)
            if current is None:
                return ReplayResult(ReplayStatus.NOT_FOUND)
            return ReplayResult(ReplayStatus.BUSY, current)
        # Marked before the first await, so a concurrent replay sees BUSY.
        self._replaying.add(letter_id)
        try:
            letter = await self.get(letter_id)
            if letter is None:
                return ReplayResult(ReplayStatus.NOT_FOUND)
            try:
                await handler(letter)
            except Exception as exc:
                at = self._now()
                failed = letter.failed_again(exc, at=at)
                args = (failed.error_type, failed.error_message, at, letter_id)

                def record(conn: sqlite3.Connection) -> DeadLetter | None:
                    row = conn.execute(_FAILED_REPLAY, args).fetchone()
                    return None if row is None else _letter(row)

                stored = await self._store.write(
                    record, durability=Durability.CRITICAL, action="recording a failed replay"
                )
                updated = stored or failed
                return ReplayResult(ReplayStatus.FAILED, updated, f"{type(exc).__name__}: {exc}")

            def remove(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM dead_letters WHERE letter_id = ?", (letter_id,))

            await self._store.write(
                remove, durability=Durability.CRITICAL, action="removing a replayed dead letter"
            )
            return ReplayResult(ReplayStatus.REPLAYED)
        finally:
            self._replaying.discard(letter_id)

    async def purge(self, **which: Unpack[PurgeFilters]) -> int:
        """Delete letters matching *all* given filters (all when none is given),
        except those being replayed; return how many were deleted."""
        letter_ids = which.get("letter_ids")
        source = which.get("source")
        failed_before = which.get("failed_before")
        clauses = ["letter_id NOT IN (SELECT value FROM json_each(?))"]
        args: list[Any] = [json.dumps(sorted(self._replaying))]
        if letter_ids is not None:
            clauses.append("letter_id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps([int(i) for i in letter_ids]))
        if source is not None:
            clauses.append("source = ?")
            args.append(source)
        if failed_before is not None:
            clauses.append("last_failed_at < ?")
            args.append(failed_before)
        sql = f"DELETE FROM dead_letters WHERE {' AND '.join(clauses)}"

        def fn(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, args).rowcount

        return await self._store.write(
            fn, durability=Durability.CRITICAL, action="purging dead letters"
        )
