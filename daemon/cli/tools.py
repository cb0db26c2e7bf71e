"""``tradingd sim``, ``bench`` and ``torture``: the tools run on demand, imported lazily.

The simulator (:mod:`daemon.venues.sim`) and the benchmarks
(:mod:`daemon.bench`) are imported only inside these functions, so that
``tradingd run`` loads neither (``tests/test_layering.py``). Their options are
declared by the tool modules too (see :class:`daemon.cli.parser._LazyParser`).
"""

from __future__ import annotations

import argparse


def cmd_sim(args: argparse.Namespace) -> int:
    """``tradingd sim``: the Binance-protocol exchange simulator."""
    from daemon.venues.sim import cli as sim_cli  # noqa: PLC0415 - not for `run`

    return sim_cli.main(args)


def cmd_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``tradingd bench orders`` (the order pipeline) or ``tradingd bench ingest`` (capture)."""
    if args.bench == "ingest":
        from daemon.bench import ingest as ingest_bench  # noqa: PLC0415 - not for `run`

        return ingest_bench.run(args, parser)
    from daemon.bench import orders as orders_bench  # noqa: PLC0415 - not for `run`

    return orders_bench.run(args, parser)


def cmd_torture(args: argparse.Namespace) -> int:
    """``tradingd torture``: the torture runner and its report."""
    from daemon.torture import cli as torture_cli  # noqa: PLC0415 - not for `run`

    return torture_cli.main(args)
