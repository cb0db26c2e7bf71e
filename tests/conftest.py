"""Suite-wide options (the fuzzing profile) and the process-level fixtures.

The parser fuzzers (hypothesis tests decorated with
:func:`tests.helpers.fuzzing.fuzz_settings`) run a bounded number of examples by
default, so the suite stays within its time budget on 2 cores;
``pytest --long`` (or ``TRADINGD_FUZZ=long``) runs them for much longer, on
demand.

``sockdir`` (a short directory for Unix sockets) and ``h`` (a
:class:`tests.helpers.process.Harness`) serve the process-level tests; their
logic lives in :mod:`tests.helpers.process`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers.process import Harness, open_harness, short_sockdir


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the parser fuzzers with the long profile (many more examples)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long") or os.environ.get("TRADINGD_FUZZ") == "long":
        os.environ["TRADINGD_FUZZ"] = "long"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths must stay under 108 bytes)."""
    with short_sockdir() as path:
        yield path


@pytest.fixture
async def h(tmp_path: Path, sockdir: Path) -> AsyncIterator[Harness]:
    """The process-level harness of one test; kills what it started."""
    async with open_harness(tmp_path, sockdir) as harness:
        yield harness
