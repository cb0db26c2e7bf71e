"""The ``tradingd`` command line.

::

    tradingd run --config PATH          run the daemon (systemd: Type=notify)
    tradingd check-config PATH          validate a config file; exit 2 listing every problem
    tradingd check-venue --config PATH  check each configured venue; exit 1 on a failed check
    tradingd demo                       run on an embedded config (state under ./var/)
    tradingd status [--json]            ask a running daemon for its status
    tradingd reload                     reload a running daemon's config; waits for the result
    tradingd dead-letters ACTION        list / show / purge dead letters
    tradingd halt|reduce-only|resume    flip a trading switch [--account A] [--reason TEXT]
    tradingd trading                    show the trading switches
    tradingd orders ACTION              list / show / cancel orders
    tradingd integrity-check            check the store's database file
    tradingd sim                        run the Binance-protocol exchange simulator
    tradingd debug-fault KIND           test-only fault hooks (need [testing] fault_injection)

Exit codes: 0 success, 1 runtime failure (or a rejected reload), 2 invalid
configuration or usage, 3 no daemon reachable, 130 interrupted / hard stop,
141 output into a closed pipe (quietly, as ``ls | head``).

Where it lives: :mod:`.dispatch` (:func:`main`, the console script),
:mod:`.parser` (every subcommand's options), :mod:`.run` (``run``,
``check-config``, ``integrity-check``), :mod:`.demo`, :mod:`.client` (the
control-socket clients) with :mod:`.render` (their terminal output),
:mod:`.checkvenue` (``check-venue``), :mod:`.tools` (``sim`` and ``bench``,
imported only when run) and
:mod:`.common` (exit codes, default paths).
"""

from __future__ import annotations

from daemon.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
)
from daemon.cli.dispatch import main
from daemon.cli.parser import build_parser

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "build_parser",
    "main",
]
