"""Fixtures of the venue tests (their logic lives in :mod:`tests.helpers`)."""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture
def loopback_clock() -> trio.testing.MockClock:
    """Virtual time that never jumps while loopback I/O is in flight."""
    return trio.testing.MockClock(autojump_threshold=0.25)
