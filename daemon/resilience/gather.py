"""Bounded fan-out: run many async calls with a concurrency limit.

:func:`gather` takes *async callables* (``functools.partial(fetch, url)``),
not coroutine objects: a coroutine that is created but never awaited (because
an earlier call failed) would only produce a warning, while a callable that is
never called costs nothing.

At most ``limit`` calls run at once, started in input order; results come back
in input order whatever the completion order. Two modes:

* ``"fail_fast"`` (default): the first exception cancels every call still
  running or not yet started, and is raised as is — not wrapped in an
  exception group, so ``except TransientError`` works at the call site.
* ``"collect"``: every call runs; the result is one
  :class:`~daemon.resilience.outcomes.Outcome` per input (``.ok``,
  ``.unwrap()``).

Timeouts are Trio's: put ``trio.fail_after`` around the ``gather`` (a bound on
the whole fan-out) or inside each callable (a bound per call). Cancellation of
the caller cancels every call, in both modes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar, overload

import trio

from daemon.resilience.outcomes import Outcome

__all__ = ["GatherMode", "gather"]

log = logging.getLogger("tradingd.resilience.gather")

T = TypeVar("T")

GatherMode = Literal["fail_fast", "collect"]


@overload
async def gather(
    calls: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    mode: Literal["fail_fast"] = "fail_fast",
    name: str = "gather",
) -> list[T]: ...


@overload
async def gather(
    calls: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    mode: Literal["collect"],
    name: str = "gather",
) -> list[Outcome[T]]: ...


async def gather(
    calls: Iterable[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    mode: GatherMode = "fail_fast",
    name: str = "gather",
) -> list[T] | list[Outcome[T]]:
    """Run ``calls`` with at most ``limit`` in flight; results in input order.

    Args:
        calls: Zero-argument async callables.
        limit: Maximum concurrent calls (>= 1).
        mode: ``"fail_fast"`` or ``"collect"`` (see the module docstring).
        name: Prefix of the worker task names (shown by the loop-lag probe).

    Returns:
        ``"fail_fast"``: the results. ``"collect"``: one outcome per call.

    Raises:
        Exception: in ``"fail_fast"`` mode, the first failure, unchanged.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if mode not in ("fail_fast", "collect"):
        raise ValueError(f"mode must be 'fail_fast' or 'collect', got {mode!r}")
    jobs = list(calls)
    count = len(jobs)
    outcomes: list[Outcome[T] | None] = [None] * count
    failures: list[Exception] = []
    next_index = 0
    collect = mode == "collect"

    async def worker(cancel_scope: trio.CancelScope) -> None:
        nonlocal next_index
        while next_index < count and not failures:
            index = next_index
            next_index += 1
            try:
                value = await jobs[index]()
            except Exception as exc:
                if collect:
                    outcomes[index] = Outcome.failure(exc)
                    continue
                if failures:
                    log.debug("%s: call %d also failed while cancelling: %r", name, index, exc)
                else:
                    failures.append(exc)
                    cancel_scope.cancel()
                return
            outcomes[index] = Outcome.success(value)

    if count == 0:
        await trio.lowlevel.checkpoint()
        return []
    async with trio.open_nursery() as nursery:
        for number in range(min(limit, count)):
            nursery.start_soon(worker, nursery.cancel_scope, name=f"{name}.worker{number}")
    if failures:
        raise failures[0]
    done: list[Outcome[T]] = []
    for item in outcomes:
        if item is None:  # pragma: no cover - every slot is filled when nothing failed
            raise RuntimeError(f"{name}: a call produced no outcome")
        done.append(item)
    if collect:
        return done
    results: list[Any] = [item.result for item in done]
    return results
