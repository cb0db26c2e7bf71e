"""The operator commands' process test: configuration, CLI recorder and store witnesses.

:mod:`tests.test_operator_process` drives ``tradingd positions``, ``reconcile``,
``dead-letters replay``, ``db backup``, ``db info``, ``status --watch`` and
``top --plain`` as real subprocesses against a real ``tradingd run`` (and then
against none). What it needs besides :class:`tests.helpers.process.Harness`:

* :func:`operator_config` — the harness's base configuration plus one SQLite
  store, capture of one symbol from the simulator, one account trading on it
  and an ``[orders]`` table in which nothing but an operator's
  ``tradingd reconcile`` learns a resting order's fill (no user data stream,
  polling and periodic reconciliation an hour apart): the command's report is
  then deterministic;
* :class:`CliRecorder` — runs ``python -m daemon ARGS --config PATH`` and keeps
  every :class:`~tests.helpers.process.CLIResult` under a label, so that the
  module-scoped scenario runs the daemon once and each test judges its own
  commands afterwards;
* :class:`LetterWitness` — the ``dead_letters`` table read from outside
  (``mode=ro``, the standard library; never :mod:`daemon.store`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.helpers.process import CLIResult, DaemonProcess, Harness, ReadOnlyDatabase
from tests.helpers.sim import SimProcess, venue_table

__all__ = [
    "ACCOUNT",
    "DB_NAME",
    "ORDERS",
    "SYMBOL",
    "VENUE",
    "CliRecorder",
    "LetterRow",
    "LetterWitness",
    "OperatorRun",
    "file_mode",
    "operator_config",
]

VENUE = "sim"
ACCOUNT = "main"
SYMBOL = "BTCUSDT"
DB_NAME = "operator.db"

#: ``[orders]``: quick sends and start-up; polling and the periodic pass an hour apart, so
#: that a fill made at the venue behind the daemon's back is learnt by ``tradingd
#: reconcile`` alone (the user data stream is off too, see :func:`operator_config`).
ORDERS: Mapping[str, float] = {
    "send_timeout_s": 3.0,
    "section_deadline_s": 4.0,
    "drain_timeout_s": 3.0,
    "query_lag_s": 0.5,
    "unknown_retry_s": 0.2,
    "reconcile_interval_s": 3600.0,
    "poll_interval_s": 3600.0,
    "startup_reconcile_timeout_s": 15.0,
}


def operator_config(h: Harness, sim: SimProcess) -> str:
    """``h``'s base configuration plus a store, capture from ``sim`` and account ``main``.

    The venue's keys are the simulator's default account. Pre-trade risk
    limits are lifted (the commands are under test, not the risk gate).
    """
    q = json.dumps  # a JSON string (or number) is valid TOML for these values
    venue = venue_table(h.tmp_path / "secrets", sim.rest_url, sim.ws_url, name=VENUE)
    orders = "\n".join(f"{key} = {q(value)}" for key, value in ORDERS.items())
    return (
        h.config_text(shutdown_timeout_s=10.0)
        + f"""
[store]
path = {q(DB_NAME)}

[marketdata]
venue = {q(VENUE)}
symbols = {q([SYMBOL])}
chunk_size = 25
trades_queue_capacity = 1000
flush_interval_s = 0.1
snapshot_interval_s = 0.0
lag_warn_s = 30.0

[orders]
{orders}

[risk]
max_orders_per_window = 0
max_open_orders = 0

{venue}request_timeout_s = 5.0
stale_after_s = 10.0
recv_window_ms = 5000
user_stream = false

[accounts.{ACCOUNT}]
venue = {q(VENUE)}
"""
    )


@attrs.define
class CliRecorder:
    """Runs ``tradingd`` subcommands as subprocesses and keeps each result under a label.

    ``--config`` is appended unless the arguments already name a ``--socket``
    or a ``--db`` (every command under test finds the daemon's control socket
    or store file from it).
    """

    h: Harness
    results: dict[str, CLIResult] = attrs.Factory(dict)

    async def run(self, label: str, *args: str, timeout_s: float = 30.0) -> CLIResult:
        assert label not in self.results, f"label {label!r} used twice"
        argv = list(args)
        if "--socket" not in argv and "--db" not in argv:
            argv += ["--config", os.fspath(self.h.config_path)]
        result = await self.h.cli(*argv, timeout_s=timeout_s)
        self.results[label] = result
        return result

    async def run_all(self, commands: Mapping[str, tuple[str, ...]]) -> None:
        """Run independent commands two at a time (the machine has two cores)."""
        limit = trio.CapacityLimiter(2)

        async def one(label: str, args: tuple[str, ...]) -> None:
            async with limit:
                await self.run(label, *args)

        async with trio.open_nursery() as nursery:
            for label, args in commands.items():
                nursery.start_soon(one, label, args)


@attrs.frozen
class LetterRow:
    """One row of ``dead_letters`` as the test judges it."""

    letter_id: int
    source: str
    key: str | None
    attempts: int
    error_message: str


class LetterWitness:
    """The daemon's dead letters read from its SQLite file (blocking: run in a thread)."""

    def __init__(self, db: Path) -> None:
        self.db = ReadOnlyDatabase(db)

    def letters(self) -> dict[int, LetterRow]:
        rows = self.db.fetchall_if_created(
            "SELECT letter_id, source, key, attempts, error_message FROM dead_letters "
            "ORDER BY letter_id"
        )
        return {
            int(r[0]): LetterRow(int(r[0]), str(r[1]), r[2], int(r[3]), str(r[4])) for r in rows
        }

    def of_source(self, source: str) -> list[LetterRow]:
        return [row for row in self.letters().values() if row.source == source]


@attrs.define
class OperatorRun:
    """What the module's one scenario saw: every command's result and the witnesses' views."""

    results: dict[str, CLIResult]
    #: Facts read from the simulator and the store at the moments the test needs them.
    facts: dict[str, Any]
    daemon: DaemonProcess | None = None

    def __getitem__(self, label: str) -> CLIResult:
        return self.results[label]

    def diag(self) -> str:
        return self.daemon.log_tail(30) if self.daemon is not None else "(no daemon)"


def file_mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return path.stat().st_mode & 0o777
