"""``tradingd``'s entry point: parse the arguments, run the command, return its exit code.

:func:`main` is the console script (``daemon.cli:main``). It hands each
subcommand to its module: :mod:`daemon.cli.run` (``run``, ``check-config``,
``integrity-check``), :mod:`daemon.cli.db` (``db migrate-to-postgres``),
:mod:`daemon.cli.checkvenue` (``check-venue``), :mod:`daemon.cli.demo`,
:mod:`daemon.cli.client` (the control-socket clients) and
:mod:`daemon.cli.tools` (``sim``, ``bench``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon.cli.checkvenue import cmd_check_venue
from daemon.cli.client import (
    cmd_dead_letters,
    cmd_fault,
    cmd_orders,
    cmd_positions,
    cmd_reconcile,
    cmd_reload,
    cmd_status,
    cmd_trading,
)
from daemon.cli.common import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, TRADING_COMMANDS
from daemon.cli.db import cmd_db
from daemon.cli.demo import cmd_demo
from daemon.cli.parser import build_parser
from daemon.cli.run import cmd_check_config, cmd_integrity_check, cmd_run
from daemon.cli.tools import cmd_bench, cmd_sim, cmd_torture
from daemon.cli.top import cmd_top


def main(argv: Sequence[str] | None = None) -> int:
    """The ``tradingd`` command; returns the exit code.

    Output into a pipe whose reader has gone (``tradingd dead-letters list |
    head``) ends the command quietly with status 141, what a shell reports for
    ``ls`` in ``ls | head`` (coreutils die by SIGPIPE: 128 + 13). The signal
    itself stays ignored, as Python sets it: the daemon must never die by it.
    """
    try:
        try:
            return _main(argv)
        finally:
            # Output still buffered is written here, where a closed pipe is caught
            # (also after argparse's --help, which exits by SystemExit).
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is
    still buffered cannot fail again (and print "Exception ignored ...")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no usable stdout at all: nothing left to protect
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(Path(args.config))
        if args.command == "check-config":
            return cmd_check_config(Path(args.path))
        if args.command == "check-venue":
            return cmd_check_venue(args)
        if args.command == "demo":
            return cmd_demo(Path(args.state_dir), args.admin_port)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "top":
            return cmd_top(args)
        if args.command == "reload":
            return cmd_reload(args)
        if args.command == "debug-fault":
            return cmd_fault(args)
        if args.command == "sim":
            return cmd_sim(args)
        if args.command == "bench":
            return cmd_bench(args, parser)
        if args.command == "torture":
            return cmd_torture(args)
        if args.command == "integrity-check":
            return cmd_integrity_check(args)
        if args.command == "db":
            return cmd_db(args)
        if args.command == "dead-letters":
            return cmd_dead_letters(args)
        if args.command in (*TRADING_COMMANDS, "trading"):
            return cmd_trading(args)
        if args.command == "orders":
            return cmd_orders(args)
        if args.command == "positions":
            return cmd_positions(args)
        if args.command == "reconcile":
            return cmd_reconcile(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces choices
