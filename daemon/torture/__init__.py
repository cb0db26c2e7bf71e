"""The torture runner (``tradingd torture``): many random faults, invariants after each.

In the style of Jepsen and of FoundationDB's simulation testing, against the
real programs: :mod:`~daemon.torture.scenario` starts the simulator and
``tradingd run`` as processes, drives market data and order flow
(:mod:`~daemon.torture.workload`), applies a seeded schedule of faults
(:mod:`~daemon.torture.faults`), settles, and judges the run by witnesses
outside the daemon (:mod:`~daemon.torture.witness`,
:mod:`~daemon.torture.checks`). :mod:`~daemon.torture.report` writes
``docs/RELIABILITY.md``; :mod:`~daemon.torture.cli` is the command line.
Imported only by ``tradingd torture`` (never by ``tradingd run``).
"""
