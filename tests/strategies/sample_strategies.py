"""Import targets for the loader and supervision tests.

Each strategy writes what it does into ``options["trace"]`` (a list the test
passes in) as ``(trio time, strategy name, event)``, so tests can assert order
and virtual time exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trio

from daemon.strategies.base import StrategyContext

Trace = list[tuple[float, str, str]]


def _record(ctx: StrategyContext, event: str) -> None:
    trace: Trace = ctx.options["trace"]
    trace.append((trio.current_time(), ctx.name, event))


class SteadyStrategy:
    """Well behaved: ticks and heartbeats every ``tick_s`` (default 0.5 s)."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx
        self.tick_s: float = ctx.options.get("tick_s", 0.5)

    async def run(self) -> None:
        _record(self.ctx, "start")
        try:
            while True:
                self.ctx.heartbeat()
                _record(self.ctx, "tick")
                await trio.sleep(self.tick_s)
        finally:
            _record(self.ctx, "cancelled")


class CrashingStrategy:
    """Crashes ``crash_after_s`` (default 0.1 s) after every start."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        _record(self.ctx, "start")
        self.ctx.heartbeat()
        await trio.sleep(self.ctx.options.get("crash_after_s", 0.1))
        raise ValueError(f"{self.ctx.name} crashed on purpose")


class HangingStrategy:
    """Heartbeats ``beats`` times (every 0.5 s), then hangs without heartbeating."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        _record(self.ctx, "start")
        try:
            for _ in range(self.ctx.options.get("beats", 2)):
                self.ctx.heartbeat()
                await trio.sleep(0.5)
            _record(self.ctx, "hang")
            await trio.sleep_forever()
        finally:
            _record(self.ctx, "cancelled")


class BadConstructorStrategy:
    """Its constructor always raises (the run method is never reached)."""

    def __init__(self, ctx: StrategyContext) -> None:
        _record(ctx, "construct")
        raise ValueError("bad constructor on purpose")

    async def run(self) -> None:
        raise AssertionError("never runs")


class ReturningStrategy:
    """Returns from ``run`` at once: a strategy must run until stopped."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        _record(self.ctx, "start")


class OptionsCheckedStrategy:
    """Validates its options at load time: ``size`` must be a positive int."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], *, account: str | None) -> Sequence[str]:
        problems = []
        size = options.get("size")
        if not isinstance(size, int) or size <= 0:
            problems.append(f"size: must be a positive integer, got {size!r}")
        if account is None:
            problems.append("account: required")
        return problems

    async def run(self) -> None:
        await trio.sleep_forever()


class NoRunStrategy:
    """Has no run method."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx


class SyncRunStrategy:
    """Its run method is not async."""

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    def run(self) -> None:
        return None


class NoContextStrategy:
    """Its constructor takes no context."""

    def __init__(self) -> None:
        pass

    async def run(self) -> None:
        await trio.sleep_forever()


class Outer:
    """Holds a nested strategy class (``module:Outer.Inner`` paths)."""

    Inner = SteadyStrategy


NOT_A_CLASS = 42


def not_a_class_either(ctx: StrategyContext) -> None:
    """A function, not a class."""
