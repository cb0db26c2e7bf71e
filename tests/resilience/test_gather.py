"""gather: concurrency limit, input order, fail-fast and collect modes."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio

from daemon.errors import PermanentError, TransientError
from daemon.resilience import gather


class Tracker:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.start_times: dict[int, float] = {}

    async def job(self, index: int, duration_s: float, error: Exception | None = None) -> int:
        self.started.append(index)
        self.start_times[index] = trio.current_time()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await trio.sleep(duration_s)
        except trio.Cancelled:
            self.cancelled.append(index)
            raise
        finally:
            self.running -= 1
        if error is not None:
            raise error
        self.finished.append(index)
        return index * 10


async def test_results_in_input_order_with_bounded_concurrency(autojump_clock: Any) -> None:
    tracker = Tracker()
    durations = [3.0, 1.0, 2.0, 1.0, 1.0]
    results = await gather([partial(tracker.job, i, d) for i, d in enumerate(durations)], limit=2)
    assert results == [0, 10, 20, 30, 40]
    assert tracker.peak == 2
    assert tracker.started == [0, 1, 2, 3, 4]  # started in input order
    assert tracker.finished[0] == 1  # completion order is free
    assert sorted(tracker.finished) == [0, 1, 2, 3, 4]
    # A slot frees at 1 (job 1 ends, job 2 starts) and two at 3 (jobs 0 and 2 end).
    assert tracker.start_times == {0: 0.0, 1: 0.0, 2: 1.0, 3: 3.0, 4: 3.0}
    assert trio.current_time() == 4.0


async def test_limit_larger_than_input_runs_everything_at_once(autojump_clock: Any) -> None:
    tracker = Tracker()
    results = await gather([partial(tracker.job, i, 1.0) for i in range(3)], limit=10)
    assert results == [0, 10, 20]
    assert tracker.peak == 3
    assert trio.current_time() == 1.0


async def test_fail_fast_cancels_the_rest_and_raises_the_error_unwrapped(
    autojump_clock: Any,
) -> None:
    tracker = Tracker()
    boom = TransientError("venue down")
    calls = [
        partial(tracker.job, 0, 5.0),
        partial(tracker.job, 1, 1.0, boom),
        partial(tracker.job, 2, 5.0),
        partial(tracker.job, 3, 5.0),
    ]
    with pytest.raises(TransientError) as info:
        await gather(calls, limit=2)
    assert info.value is boom
    assert trio.current_time() == 1.0
    assert tracker.started == [0, 1]  # 2 and 3 never started
    assert tracker.cancelled == [0]
    assert tracker.running == 0


async def test_fail_fast_raises_the_first_failure(autojump_clock: Any) -> None:
    tracker = Tracker()
    first, second = PermanentError("first"), PermanentError("second")
    calls = [partial(tracker.job, 0, 2.0, second), partial(tracker.job, 1, 1.0, first)]
    with pytest.raises(PermanentError) as info:
        await gather(calls, limit=2)
    assert info.value is first


async def test_collect_returns_every_outcome_in_order(autojump_clock: Any) -> None:
    tracker = Tracker()
    boom = TransientError("down")
    calls = [
        partial(tracker.job, 0, 2.0),
        partial(tracker.job, 1, 1.0, boom),
        partial(tracker.job, 2, 1.0),
    ]
    outcomes = await gather(calls, limit=2, mode="collect")
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[0].unwrap() == 0
    assert outcomes[2].unwrap() == 20
    assert outcomes[1].error is boom
    with pytest.raises(TransientError):
        outcomes[1].unwrap()
    assert tracker.cancelled == []
    assert trio.current_time() == 2.0


async def test_caller_cancellation_cancels_every_call(autojump_clock: Any) -> None:
    tracker = Tracker()
    with trio.move_on_after(1.5):
        await gather([partial(tracker.job, i, 1.0) for i in range(4)], limit=2, mode="collect")
    assert sorted(tracker.finished) == [0, 1]
    assert sorted(tracker.cancelled) == [2, 3]
    assert tracker.running == 0


async def test_base_exceptions_are_not_captured(autojump_clock: Any) -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(BaseException) as info:
        await gather([interrupt], limit=1, mode="collect")
    assert info.group_contains(KeyboardInterrupt) or isinstance(info.value, KeyboardInterrupt)


async def test_empty_input_and_validation(autojump_clock: Any) -> None:
    assert await gather([], limit=3) == []
    assert await gather([], limit=3, mode="collect") == []
    with pytest.raises(ValueError):
        await gather([], limit=0)
    with pytest.raises(ValueError):
        await gather([], limit=1, mode="bogus")  # type: ignore[call-overload]


async def test_worker_tasks_are_named(autojump_clock: Any) -> None:
    names: list[str] = []

    async def record() -> None:
        names.append(trio.lowlevel.current_task().name)
        await trio.lowlevel.checkpoint()

    await gather([record, record], limit=2, name="backfill")
    assert sorted(names) == ["backfill.worker0", "backfill.worker1"]
