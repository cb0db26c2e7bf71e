"""Online backups of the SQLite store and ``db info``: real files, real threads.

The store here uses its real worker-thread lane (no autojump clock: thread
calls and the backup's own thread need real time), every wait under
``trio.fail_after``.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon import cli
from daemon.control import serve_control
from daemon.store import SqliteStore
from daemon.store.backup import BackupJobs, online_backup, store_info
from tests.helpers.store import trade

TIMEOUT_S = 30.0


async def _populated(path: Path, trades: int = 3000) -> SqliteStore:
    store = await SqliteStore.open(path)
    await store.market.insert_trades([trade(i) for i in range(1, trades + 1)], chunk_size=500)
    return store


async def test_a_backup_while_the_store_keeps_writing_is_consistent_and_private(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        store = await _populated(tmp_path / "live.db")
        try:
            target = tmp_path / "copy.db"
            written = 3000

            async def keep_writing() -> None:
                nonlocal written
                while True:
                    await store.market.insert_trades([trade(written + 1)], chunk_size=1)
                    written += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_writing)
                result = await trio.to_thread.run_sync(online_backup, store.path, target)
                nursery.cancel_scope.cancel()
        finally:
            await store.aclose()
    assert result.ok and result.problems == () and result.bytes == target.stat().st_size
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    copied = sqlite3.connect(target)
    try:
        ids = [row[0] for row in copied.execute("SELECT trade_id FROM trades ORDER BY trade_id")]
        mode = copied.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        copied.close()
    assert ids == list(range(1, len(ids) + 1)) and 3000 <= len(ids) <= written  # a snapshot
    assert mode == "delete"  # a single, self-contained file
    with pytest.raises(FileExistsError):
        online_backup(tmp_path / "live.db", target)
    with pytest.raises(FileNotFoundError):
        online_backup(tmp_path / "live.db", tmp_path / "no" / "such" / "dir.db")


async def test_backup_jobs_answer_the_control_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.store")
    with trio.fail_after(TIMEOUT_S):
        store = await _populated(tmp_path / "live.db")
        try:
            jobs = BackupJobs(lambda: store)
            target = tmp_path / "copy.db"
            started = await jobs.handle({"action": "backup", "path": str(target)})
            assert started["ok"] and started["started"]
            again = await jobs.handle({"action": "backup", "path": str(tmp_path / "b.db")})
            assert not again["ok"] and "is running" in again["error"]
            status: dict[str, Any] = started
            while status.get("running"):
                await trio.sleep(0.05)
                status = await jobs.handle({"action": "backup-status"})
            assert status["result"]["ok"] is True and status["result"]["path"] == str(target)
            # A CLI that stopped following it still finds the result in the daemon's log.
            assert f"store backed up to {target}: " in caplog.text
            for message, needle in (
                ({"action": "backup", "path": "relative.db"}, "must be absolute"),
                ({"action": "backup", "path": str(target)}, "exists; a backup never overwrites"),
                ({"action": "backup", "path": str(tmp_path / "x" / "y.db")}, "not a directory"),
                ({"action": "backup", "path": 7}, "non-empty file path"),
                ({"action": "shred"}, "unknown db action"),
            ):
                answer = await jobs.handle(message)
                assert not answer["ok"] and needle in answer["error"], message
        finally:
            await store.aclose()
    not_sqlite = await BackupJobs(object).handle(
        {"action": "backup", "path": str(tmp_path / "pg.db")}
    )
    assert not not_sqlite["ok"] and "pg_dump" in not_sqlite["error"]


async def test_db_backup_and_db_info_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "c.sock"
    target = tmp_path / "backup.db"
    with trio.fail_after(TIMEOUT_S):
        store = await _populated(tmp_path / "live.db", trades=50)
        try:
            jobs = BackupJobs(lambda: store)
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_control, sock, jobs.handle)
                argv = ["db", "backup", str(target), "--socket", str(sock)]
                code = await trio.to_thread.run_sync(functools.partial(cli.main, argv))
                nursery.cancel_scope.cancel()
        finally:
            await store.aclose()
    assert code == cli.EXIT_OK
    assert capsys.readouterr().out.startswith(f"{target}: ")
    assert await trio.to_thread.run_sync(
        functools.partial(cli.main, ["db", "backup", str(target), "--socket", str(sock)])
    ) == cli.EXIT_UNREACHABLE  # fmt: skip

    assert cli.main(["db", "info", "--db", str(target)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"{target}: schema version " in out
    assert "trades" in out and "(ids 1..50)" in out
    info = store_info(target)
    assert info["rows"]["trades"] == 50 and info["wal_bytes"] == 0
    assert info["trades"][0]["first_trade_id"] == 1 and info["trades"][0]["last_trade_id"] == 50
    assert cli.main(["db", "info", "--db", str(tmp_path / "none.db")]) == cli.EXIT_FAILURE
    assert "no such database file" in capsys.readouterr().err
