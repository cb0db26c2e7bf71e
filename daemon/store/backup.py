"""Online backups of the SQLite store, and what the store file holds (``tradingd db``).

**Backup** (:func:`online_backup`, run by :class:`BackupJobs` for the control
socket's ``{"cmd": "db", "action": "backup", "path": ...}``): SQLite's backup
API copies the live database into a new file while the daemon runs. It uses
its own read connection, not the store's owner connection, and copies all
pages in one step: in WAL mode a reader holds one consistent snapshot without
blocking the writer, so capture and orders carry on at full speed (a stepwise
copy would restart whenever the daemon commits between steps, and on the
owner's own thread it would stop every write for the whole copy). The copy is
then checked with ``PRAGMA integrity_check`` on a read-only connection. The
file is created private (0600) and never overwrites an existing one. Progress
is the copy's size against the source's (what ``tradingd db backup`` shows).

**Info** (:func:`store_info`): schema version, page size, the file's and its
WAL's sizes, rows per table, the oldest and newest trade per venue and symbol,
order intents by state and dead letters — read on a read-only connection, so
it is safe beside a running daemon.

Both are SQLite's; a PostgreSQL store is backed up with the server's tools
(``pg_dump``, base backups and WAL archiving) and described by its catalogs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from daemon.store.errors import StoreError, StoreOpenError, translate_error
from daemon.store.maintenance import integrity_check

__all__ = ["BackupJobs", "BackupResult", "online_backup", "store_info"]

log = logging.getLogger("tradingd.store")

#: Tables whose rows ``store_info`` counts (those that exist in the file).
_TABLES: Final = (
    "trades",
    "book_snapshots",
    "book_levels",
    "ingest_checkpoints",
    "gaps",
    "dead_letters",
    "order_intents",
    "order_history",
    "order_fills",
    "positions",
    "trading_states",
    "account_leases",
)


@attrs.frozen
class BackupResult:
    """A finished backup: where, how big, how long, and what the check said."""

    path: str
    bytes: int
    seconds: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "problems": list(self.problems), "ok": self.ok}


def _read_only(path: Path, action: str) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreOpenError(f"store {path}: no such database file", path=str(path))
    try:
        return sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise (translate_error(exc, str(path), action=action) or exc) from exc


def online_backup(source: Path, target: Path) -> BackupResult:
    """Copy the database ``source`` into the new file ``target``, then check the copy.

    Blocking (run it in a worker thread). ``target`` must not exist; it is
    created 0600 in an existing directory.

    Raises:
        FileExistsError: ``target`` exists.
        FileNotFoundError: its directory does not exist.
        StoreError: the source cannot be read (translated), or the copy failed.
    """
    started = time.monotonic()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        src = _read_only(source, "opening for a backup")
        try:
            dst = sqlite3.connect(target, isolation_level=None)
            try:
                src.backup(dst, pages=-1)  # one step: one consistent snapshot
                dst.execute("PRAGMA journal_mode = DELETE")  # a single, self-contained file
            finally:
                dst.close()
        except sqlite3.Error as exc:
            raise (translate_error(exc, str(source), action="backing up") or exc) from exc
        finally:
            src.close()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    problems = tuple(integrity_check(target))
    return BackupResult(str(target), target.stat().st_size, time.monotonic() - started, problems)


def store_info(path: Path) -> dict[str, Any]:
    """What the store file holds (see the module docstring); read-only, blocking."""
    conn = _read_only(path, "opening for info")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        existing = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        rows = {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in _TABLES
            if table in existing
        }
        trades = [
            {
                "venue": venue,
                "symbol": symbol,
                "trades": count,
                "first_trade_id": first_id,
                "last_trade_id": last_id,
                "oldest_ms": oldest,
                "newest_ms": newest,
            }
            for venue, symbol, count, first_id, last_id, oldest, newest in conn.execute(
                "SELECT venue, symbol, count(*), min(trade_id), max(trade_id), "
                "min(trade_time_ms), max(trade_time_ms) FROM trades "
                "GROUP BY venue, symbol ORDER BY venue, symbol"
            )
        ] if "trades" in existing else []  # fmt: skip
        by_state = (
            dict(conn.execute("SELECT state, count(*) FROM order_intents GROUP BY state"))
            if "order_intents" in existing
            else {}
        )
    except sqlite3.Error as exc:
        raise (translate_error(exc, str(path), action="reading info") or exc) from exc
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    return {
        "path": str(path),
        "schema_version": version,
        "page_size": page_size,
        "file_bytes": path.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "rows": rows,
        "trades": trades,
        "orders_by_state": by_state,
    }


def _target_problem(target: Path) -> str | None:
    if target.exists():
        return f"{target} exists; a backup never overwrites"
    if not target.parent.is_dir():
        return f"{target.parent} is not a directory"
    return None


class BackupJobs:
    """One online backup at a time, for the control socket (the daemon owns it).

    Args:
        owner: The open store now (``None`` while closed); only a SQLite store
            is backed up here.
    """

    def __init__(self, owner: Callable[[], object | None]) -> None:
        self._owner = owner
        self._running: tuple[Path, Path] | None = None
        self._last: dict[str, Any] | None = None

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """``{"cmd": "db", "action": "backup", "path": P}`` or ``"backup-status"``."""
        action = message.get("action")
        if action == "backup-status":
            return {"ok": True, **self.status()}
        if action != "backup":
            return {"ok": False, "error": "unknown db action (one of: backup, backup-status)"}
        raw = message.get("path")
        if not isinstance(raw, str) or not raw or "\x00" in raw or len(raw) > 4096:
            return {"ok": False, "error": "path must be a non-empty file path"}
        target = Path(raw)
        if not target.is_absolute():
            return {"ok": False, "error": "path must be absolute (the daemon's working "
                    "directory is not yours)"}  # fmt: skip
        owner = self._owner()
        dialect = getattr(getattr(owner, "sql", None), "name", None)
        source: Path | None = getattr(owner, "path", None) if dialect == "sqlite" else None
        if source is None:
            return {"ok": False, "error": "no SQLite store is open (PostgreSQL: use pg_dump)"}
        if self._running is not None:
            return {"ok": False, "error": f"a backup to {self._running[1]} is running"}
        self._running = (source, target)  # before the await: one backup at a time
        problem = await trio.to_thread.run_sync(_target_problem, target)
        if problem is not None:
            self._running = None
            return {"ok": False, "error": problem}
        self._last = None
        trio.lowlevel.spawn_system_task(self._run, source, target)
        return {"ok": True, "started": True, **self.status()}

    async def _run(self, source: Path, target: Path) -> None:
        try:
            result = await trio.to_thread.run_sync(online_backup, source, target)
            self._last = result.to_dict()
        except (StoreError, OSError) as exc:
            self._last = {"path": str(target), "ok": False, "error": f"{exc}"[:500]}
        except Exception as exc:  # a bug must not take the daemon down (a system task)
            log.exception("store backup to %s failed unexpectedly", target)
            self._last = {"path": str(target), "ok": False, "error": type(exc).__name__}
        finally:
            self._running = None
        last = self._last or {}
        if last.get("ok"):
            log.info(
                "store backed up to %s: %s bytes in %.2fs, integrity_check ok",
                target,
                last.get("bytes"),
                last.get("seconds") or 0.0,
            )
        else:
            log.error(
                "store backup to %s not verified: %s",
                target,
                last.get("error") or "; ".join(last.get("problems") or []),
            )

    def status(self) -> dict[str, Any]:
        """The running backup's progress (copy size against the source's), or the last result."""
        if self._running is None:
            return {"running": False, "result": self._last}
        source, target = self._running
        try:
            total = source.stat().st_size
            done = target.stat().st_size
        except OSError:
            total = done = 0
        return {"running": True, "path": str(target), "bytes_done": done, "bytes_total": total}
