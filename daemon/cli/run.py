"""``tradingd run``, ``check-config`` and ``integrity-check``: the commands on a config file.

:func:`cmd_run` runs the daemon in this process (systemd: ``Type=notify``);
:func:`run_daemon` is what it and ``tradingd demo`` share (logging, the
exit status of a configuration or secret error at start). The configuration
problems of a file are printed by :func:`print_problems`, one a line.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from daemon import config as configmod
from daemon import logs
from daemon.app import Daemon
from daemon.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from daemon.config import Config
from daemon.errors import ConfigError, SecretError, StoreError
from daemon.notify import Notifier, unset_environment
from daemon.store import integrity_check
from daemon.strategies import StrategySpec, load_strategies

log = logging.getLogger("tradingd.cli")

#: The daemon's umask (``UMask=0077`` in the systemd unit): whatever it creates
#: that is not given a mode explicitly (sockets, SQLite's temporary files) is private.
DAEMON_UMASK = 0o077


def cmd_check_config(path: Path) -> int:
    """Every problem of the file and of the environment, in one pass (exit 2), else a summary."""
    config, problems = configmod.check_file(path)
    if config is not None:
        try:
            # Import every enabled strategy's class: a typo must fail here, not at start.
            load_strategies(StrategySpec.from_config(n, s) for n, s in config.strategies.items())
        except ConfigError as exc:
            problems += list(exc.problems)
    if problems or config is None:
        print_problems(problems)
        return EXIT_CONFIG
    print(configmod.summary(config))
    return EXIT_OK


def print_problems(problems: Sequence[str]) -> None:
    print(f"invalid configuration ({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def private_umask() -> None:
    os.umask(DAEMON_UMASK)


def cmd_run(path: Path) -> int:
    notifier = Notifier.from_environ()
    unset_environment()
    private_umask()
    config, problems = configmod.check_file(path)
    if problems or config is None:
        print_problems(problems)
        first = problems[0] if problems else str(path)
        notifier.status(f"invalid configuration: {first}"[:200])
        notifier.errno(errno.EINVAL)
        return EXIT_CONFIG
    return run_daemon(config, notifier, config_path=path)


def run_daemon(config: Config, notifier: Notifier, **kwargs: Any) -> int:
    logs.setup_logging(config.logging)
    try:
        daemon = Daemon(config, notifier=notifier, **kwargs)
        return trio.run(daemon.run)
    except (SecretError, ConfigError) as exc:
        # One log line a problem: the escaping of log values would fold a
        # multi-line message into one line of "\n".
        for problem in exc.problems if isinstance(exc, ConfigError) else (str(exc),):
            log.error("%s", problem)
        notifier.errno(errno.EINVAL)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        # Ctrl-C before the signal handler was installed (or after it was removed).
        return EXIT_INTERRUPTED
    finally:
        notifier.close()


def cmd_integrity_check(args: argparse.Namespace) -> int:
    """PRAGMA integrity_check (+ foreign keys) on a read-only connection."""
    if args.db:
        path = Path(args.db)
    else:
        try:
            path = configmod.load(args.config).store_path()
        except ConfigError as exc:
            print_problems(exc.problems)
            return EXIT_CONFIG
    try:
        problems = integrity_check(path)
    except StoreError as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if problems:
        print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{path}: ok")
    return EXIT_OK
