"""Chunked bulk writes: one transaction per chunk, a summary of what was stored.

:func:`insert_chunks` is the loop behind
:meth:`~daemon.store.marketdata.MarketDataStore.insert_trades` and
``insert_book_snapshots``: ``chunk_size`` rows per transaction, one owner
call per chunk (other store work interleaves between chunks). A chunk the
schema refuses (:class:`~daemon.store.errors.StoreDataError`) fails alone
and the next chunks are still written; an environment failure (disk full,
read-only, locked, corrupt) stops the call, since every further chunk would
fail the same way. After the first failed chunk no chunk advances its
checkpoint (a hole must not be skipped over). The table's counters
(:class:`~daemon.store.base.TableStats`) and one log line tell the outcome.

Backend-neutral: what a chunk writes is the ``job`` a backend's table
module builds (``marketdata_trades.write_trades``,
``marketdata_books.write_snapshots``), run through any
:class:`~daemon.store.base.StoreOwner`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from daemon.store.base import Durability, StoreOwner
from daemon.store.errors import StoreClosedError, StoreDataError, StoreError
from daemon.store.marketdata_values import ChunkFailure, ChunkResult, WriteSummary

__all__ = ["ChunkJob", "insert_chunks"]

log = logging.getLogger("tradingd.store.marketdata")

X = TypeVar("X")
ConnT = TypeVar("ConnT")

#: Builds one chunk's transaction: ``job(chunk, advance)`` (``advance``: may the
#: chunk move its checkpoint).
ChunkJob = Callable[[Sequence[X], bool], Callable[[ConnT], ChunkResult]]


async def insert_chunks(
    store: StoreOwner[ConnT],
    items: list[X],
    *,
    chunk_size: int,
    table: str,
    action: str,
    job: ChunkJob[X, ConnT],
) -> WriteSummary:
    """Write ``items`` in chunks of ``chunk_size``, each chunk ``job(chunk, advance)`` in
    one MARKET transaction; count them in the table's counters and summarise.

    Returns:
        The summary; failed chunks are listed in it, not raised. Chunks
        committed before a cancellation stay committed.

    Raises:
        StoreClosedError: the store is closed.
    """
    if store.closed:
        raise StoreClosedError(f"store {store.path}: closed", path=str(store.path))
    stats = store.stats.table(table)
    stats.calls += 1
    inserted = updated = skipped = failed = 0
    failures: list[ChunkFailure] = []
    stop: StoreError | None = None
    advance = True
    checkpoint: int | None = None
    starts = range(0, len(items), chunk_size)
    for index, start in enumerate(starts):
        chunk = items[start : start + chunk_size]
        stats.rows_attempted += len(chunk)
        if stop is not None:
            failures.append(ChunkFailure(index, start, len(chunk), stop, attempted=False))
            failed += len(chunk)
            stats.rows_failed += len(chunk)
            stats.chunks_failed += 1
            continue
        try:
            result = await store.write(
                job(chunk, advance), durability=Durability.MARKET, action=action
            )
        except StoreError as exc:
            failures.append(ChunkFailure(index, start, len(chunk), exc))
            failed += len(chunk)
            stats.rows_failed += len(chunk)
            stats.chunks_failed += 1
            advance = False  # never move a resume point over a hole
            if not isinstance(exc, StoreDataError):
                stop = exc  # the next chunks would hit the same wall
            continue
        inserted += result.inserted
        updated += result.updated
        skipped += result.skipped
        stats.chunks_committed += 1
        stats.rows_inserted += result.inserted
        stats.rows_updated += result.updated
        stats.rows_skipped += result.skipped
        if result.checkpoint is not None:
            checkpoint = result.checkpoint
    summary = WriteSummary(
        attempted=len(items),
        inserted=inserted,
        skipped=skipped,
        updated=updated,
        failed=failed,
        chunks=len(starts),
        failed_chunks=tuple(failures),
        checkpoint=checkpoint,
    )
    if failures:
        first = failures[0]
        log.warning(
            "%s: %d of %d chunk(s) failed (%d rows; chunks %s): %s",
            action,
            len(failures),
            summary.chunks,
            failed,
            [f.index for f in failures],
            first.error,
        )
    else:
        log.debug(
            "%s: attempted %d, inserted %d, updated %d, skipped %d in %d chunk(s)",
            action,
            summary.attempted,
            inserted,
            updated,
            skipped,
            summary.chunks,
        )
    return summary
