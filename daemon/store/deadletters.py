"""The durable :class:`~daemon.resilience.DeadLetterStore`: dead letters in the store.

Same semantics as :class:`~daemon.resilience.InMemoryDeadLetterStore` (the
behavioural tests run against both), but a letter survives restarts and
``kill -9``: every change commits with ``synchronous=FULL``
(:attr:`~daemon.store.base.Durability.CRITICAL`) — a dead letter is often the
only remaining copy of a message.

* ``add`` merges into the stored letter with the same ``(source, key)``
  (attempts add up, times widen, the newest payload and error win), so a
  message that keeps failing stays one record; a unique index on
  ``(source, key)`` backs it.
* Ids come from ``AUTOINCREMENT`` (SQLite) or a sequence (PostgreSQL): a
  purged id is never reused.
* Payloads: JSON values as JSON text, raw ``bytes`` as a BLOB; the kind is
  stored, so both read back as they went in.
* ``replay`` runs the handler on the event loop (never inside the database
  lane) and marks the letter busy *in this process* meanwhile: a second
  replay gets ``BUSY`` and ``purge`` leaves it alone. Success deletes it;
  failure updates it (``attempts + 1``, the new error, ``last_failed_at``).

No SQL here: the statements are the owner's dialect's
(:class:`~daemon.store.dialect.DeadLetterSql`: ``deadletters_sqlite.py``,
``pg_deadletters.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from daemon.resilience.deadletter import (
    DeadLetter,
    PurgeFilters,
    ReplayHandler,
    ReplayResult,
    ReplayStatus,
)
from daemon.store.base import Durability, StoreOwner

__all__ = ["SqliteDeadLetterStore"]


class SqliteDeadLetterStore:
    """Dead letters in the store's ``dead_letters`` table (``store.dead_letters``).

    The name is historical: it runs on any owner (SQLite or PostgreSQL),
    through the owner's :attr:`~daemon.store.base.StoreOwner.sql`. Use the
    store's instance: the "being replayed" marks live in it.

    Args:
        store: The owner of the database.
        now: Wall clock (epoch seconds) stamped on failed replays.
    """

    def __init__(self, store: StoreOwner[Any], *, now: Callable[[], float] = time.time) -> None:
        self._store = store
        self._sql = store.sql.dead_letters
        self._now = now
        self._replaying: set[int] = set()

    async def add(self, letter: DeadLetter) -> DeadLetter:
        """Store ``letter`` or merge it into the one with the same source and key."""
        add = self._sql.add_letter
        return await self._store.write(
            lambda conn: add(conn, letter),
            durability=Durability.CRITICAL,
            action="adding a dead letter",
        )

    async def list(
        self, *, source: str | None = None, after_id: int | None = None, limit: int = 100
    ) -> Sequence[DeadLetter]:
        """Letters by ascending id, optionally of one source, after an id (paging)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        list_letters = self._sql.list_letters
        after = 0 if after_id is None else after_id
        return await self._store.read(
            lambda conn: list_letters(conn, source=source, after_id=after, limit=limit),
            action="listing dead letters",
        )

    async def get(self, letter_id: int) -> DeadLetter | None:
        """One letter, or ``None``."""
        get = self._sql.get_letter
        return await self._store.read(
            lambda conn: get(conn, letter_id), action="reading a dead letter"
        )

    async def count(self, *, source: str | None = None) -> int:
        """How many letters are stored (of one source), for metrics and the CLI."""
        count = self._sql.count_letters
        return await self._store.read(
            lambda conn: count(conn, source), action="counting dead letters"
        )

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
                record = self._sql.record_failed_replay
                stored = await self._store.write(
                    lambda conn: record(
                        conn, letter_id, failed.error_type, failed.error_message, at
                    ),
                    durability=Durability.CRITICAL,
                    action="recording a failed replay",
                )
                updated = stored or failed
                return ReplayResult(ReplayStatus.FAILED, updated, f"{type(exc).__name__}: {exc}")
            remove = self._sql.remove_letter
            await self._store.write(
                lambda conn: remove(conn, letter_id),
                durability=Durability.CRITICAL,
                action="removing a replayed dead letter",
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
        keep = sorted(self._replaying)
        ids = None if letter_ids is None else [int(i) for i in letter_ids]
        purge = self._sql.purge_letters
        return await self._store.write(
            lambda conn: purge(
                conn, keep=keep, letter_ids=ids, source=source, failed_before=failed_before
            ),
            durability=Durability.CRITICAL,
            action="purging dead letters",
        )
