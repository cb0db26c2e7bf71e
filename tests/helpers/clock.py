"""A settable clock for the pure cores (health, risk, breakers, the store's wall clock)."""

from __future__ import annotations


class FakeClock:
    """A clock (seconds) that only moves when told to: set ``now`` or :meth:`advance` it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
