"""ThreadLane / run_in_thread: owner-named threads, bounded, calling back into Trio.

Real threads and the real clock (a virtual clock would jump past ``fail_after``
deadlines while a thread works), each test bounded by ``fail_after``.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import trio

from daemon.resilience import ThreadLane, run_in_thread


async def test_runs_in_a_thread_named_after_the_owner() -> None:
    lane = ThreadLane("store")
    main_thread = threading.get_ident()

    def work(a: int, b: int) -> tuple[int, str, int]:
        return a + b, threading.current_thread().name, threading.get_ident()

    with trio.fail_after(10):
        total, name, ident = await lane.run(work, 2, 3)
    assert total == 5
    assert name == "tradingd:store"
    assert ident != main_thread
    assert lane.stats.calls == 1
    assert lane.stats.in_flight == 0


async def test_lane_bounds_concurrency() -> None:
    lane = ThreadLane("fsync", max_threads=2)
    lock = threading.Lock()
    running = 0
    peak = 0

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(lane.run, work)
    assert peak == 2
    assert lane.stats.max_in_flight == 6  # queued ones count as in flight
    snap = json.loads(json.dumps(lane.snapshot()))
    assert snap["owner"] == "fsync"
    assert snap["max_threads"] == 2
    assert snap["running"] == 0
    assert snap["stats"]["calls"] == 6


async def test_exceptions_propagate_unchanged() -> None:
    lane = ThreadLane("store")
    error = OSError("disk full")

    def work() -> None:
        raise error

    with trio.fail_after(10), pytest.raises(OSError) as info:
        await lane.run(work)
    assert info.value is error
    assert lane.stats.errors == 1


async def test_calling_back_into_trio_from_the_worker_thread() -> None:
    lane = ThreadLane("bridge")
    send, receive = trio.open_memory_channel[str](10)
    loop_thread = threading.get_ident()

    async def on_loop(text: str) -> int:
        assert threading.get_ident() == loop_thread
        await send.send(text)
        return len(text)

    def work() -> int:
        sent = trio.from_thread.run(on_loop, "hello")  # await on the loop
        trio.from_thread.run_sync(send.send_nowait, "world")  # quick sync call there
        trio.from_thread.check_cancelled()
        return sent

    with trio.fail_after(10):
        assert await lane.run(work) == 5
    assert [receive.receive_nowait(), receive.receive_nowait()] == ["hello", "world"]


async def test_cancellation_waits_for_the_thread_by_default() -> None:
    lane = ThreadLane("store")
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.1)
        finished.set()

    with trio.fail_after(10):
        with trio.move_on_after(0.01):
            await lane.run(slow)
        assert finished.is_set()  # the call was not cut in half


async def test_run_in_thread_primitive() -> None:
    limiter = trio.CapacityLimiter(1)
    with trio.fail_after(10):
        name = await run_in_thread(
            lambda: threading.current_thread().name, owner="adhoc", limiter=limiter
        )
    assert name == "tradingd:adhoc"


def test_lane_validation() -> None:
    with pytest.raises(ValueError):
        ThreadLane("x", max_threads=0)
