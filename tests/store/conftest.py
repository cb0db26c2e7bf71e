from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.store import SqliteStore
from tests.helpers.store import WallClock, open_store


@pytest.fixture
def wall_clock() -> WallClock:
    return WallClock()


@pytest.fixture
async def store(tmp_path: Path, wall_clock: WallClock) -> AsyncIterator[SqliteStore]:
    """A fresh store on a temporary file, blocking calls run inline (autojump-safe)."""
    opened = await open_store(tmp_path / "store.db", wall_clock=wall_clock)
    async with opened:
        yield opened
