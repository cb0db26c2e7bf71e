"""Overhead micro-benchmark (not a test): ``python -m daemon.bench.resilience``.

Prints the per-call cost of an uncontended limiter ``acquire`` and of a
breaker-guarded call, each relative to a bare ``trio.lowlevel.checkpoint()``
measured in the same run (the target is under 3x). Uses the real clock;
numbers vary between machines, the ratios much less.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import trio

from daemon.resilience.breaker import BreakerConfig, CircuitBreaker
from daemon.resilience.ratelimit import SlidingWindowLimiter, TokenBucket, Window

__all__ = ["main", "measure"]


async def _noop() -> None:
    await trio.lowlevel.checkpoint()


async def _time_per_op(body: Callable[[], Awaitable[None]], iterations: int) -> float:
    for _ in range(min(iterations, 1000)):  # warm-up
        await body()
    started = time.perf_counter()
    for _ in range(iterations):
        await body()
    return (time.perf_counter() - started) / iterations


async def measure(iterations: int = 200_000, rounds: int = 3) -> dict[str, float]:
    """Seconds per operation (best of ``rounds``) for each measured case."""
    bucket = TokenBucket(rate_per_s=1e12, capacity=1e12, name="bench")
    windows = SlidingWindowLimiter([Window("w", 1e12, 1.0)], name="bench")
    breaker = CircuitBreaker("bench", BreakerConfig(failure_threshold=5))

    async def checkpoint() -> None:
        await trio.lowlevel.checkpoint()

    async def bucket_acquire() -> None:
        await bucket.acquire()

    async def bucket_async_with() -> None:
        async with bucket:
            pass

    async def window_acquire() -> None:
        await windows.acquire()

    async def breaker_protect() -> None:
        async with breaker.protect():
            pass

    async def breaker_call() -> None:
        await breaker.call(_noop)

    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "checkpoint": checkpoint,
        "token_bucket.acquire": bucket_acquire,
        "token_bucket async with": bucket_async_with,
        "sliding_window.acquire": window_acquire,
        "breaker.protect (empty body)": breaker_protect,
        "breaker.call(checkpoint)": breaker_call,
    }
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, body in cases.items():
            per_op = await _time_per_op(body, iterations)
            best[label] = min(best.get(label, per_op), per_op)
    return best


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = trio.run(measure, args.iterations, args.rounds)
    base = results["checkpoint"]
    print(f"{'case':<32} {'ns/op':>10} {'x checkpoint':>13}")
    for label, per_op in results.items():
        print(f"{label:<32} {per_op * 1e9:>10.0f} {per_op / base:>13.2f}")


if __name__ == "__main__":
    main()
