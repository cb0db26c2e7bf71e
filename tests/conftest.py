"""Suite-wide options: the fuzzing profile.

The parser fuzzers (hypothesis tests decorated with
:func:`tests.fuzzing.fuzz_settings`) run a bounded number of examples by
default, so the suite stays within its time budget on 2 cores;
``pytest --long`` (or ``TRADINGD_FUZZ=long``) runs them for much longer, on
demand.
"""

from __future__ import annotations

import os

import pytest


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
