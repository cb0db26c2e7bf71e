"""A real :class:`~daemon.supervise.Supervisor` running for the duration of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from daemon.supervise import Supervisor


@asynccontextmanager
async def supervising(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    """Start ``supervisor`` (its children started) and, at the block's end, stop it gracefully.

    The block's end asks the tree to stop and waits for it (the nursery), so a
    child's shutdown runs before the caller's own clean-up.
    """
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        try:
            yield supervisor
        finally:
            supervisor.request_stop()
