"""Token bucket and sliding-window limiters: exact times, FIFO, cancellation, freezing."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.resilience import SlidingWindowLimiter, TokenBucket, Window
from daemon.resilience.ratelimit import SlidingWindowCore, TokenBucketCore

# ---------------------------------------------------------------- token bucket


async def test_burst_then_steady_rate(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=2.0, capacity=4.0)
    times = []
    for _ in range(7):
        await bucket.acquire()
        times.append(trio.current_time())
    assert times == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5]


async def test_weighted_acquire_waits_for_the_deficit(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=4.0, capacity=8.0, initial=1.0)
    await bucket.acquire(3)
    assert trio.current_time() == 0.5  # (3 - 1) / 4
    assert bucket.available() == 0.0
    await trio.sleep(10)
    assert bucket.available() == 8.0  # capped


async def test_context_manager_forms(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=2.0)
    async with bucket:
        pass
    async with bucket.acquiring(1):
        pass
    assert trio.current_time() == 0.0
    async with bucket.acquiring(2):
        assert trio.current_time() == 2.0
    assert bucket.stats.acquired == 3
    assert bucket.stats.units == 4.0


async def test_try_acquire(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=2.0)
    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    await trio.sleep(1.0)
    assert not bucket.try_acquire(2)
    assert bucket.try_acquire(1)
    assert bucket.stats.try_rejected == 2


async def test_try_acquire_never_jumps_the_queue(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=4.0, initial=1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bucket.acquire, 4)  # waits until t=3
        await trio.sleep(0.5)
        assert bucket.waiting == 1
        assert bucket.available() == 1.5
        assert not bucket.try_acquire(1)  # tokens exist, but someone is first
    assert trio.current_time() == 3.0


async def test_fifo_heavy_head_is_not_overtaken(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=4.0, initial=0.0)
    admitted: list[tuple[str, float]] = []

    async def take(label: str, weight: float, arrive_s: float) -> None:
        await trio.sleep(arrive_s)
        await bucket.acquire(weight)
        admitted.append((label, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "heavy", 4, 0.0)
        nursery.start_soon(take, "light1", 1, 0.25)
        nursery.start_soon(take, "light2", 1, 0.5)
    assert admitted == [("heavy", 4.0), ("light1", 5.0), ("light2", 6.0)]


async def test_cancelled_waiter_takes_nothing_and_blocks_nobody(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=4.0, initial=0.0)
    admitted: list[float] = []

    async def heavy() -> None:
        with trio.move_on_after(1.0) as scope:
            await bucket.acquire(4)
        assert scope.cancelled_caught

    async def light() -> None:
        await trio.sleep(0.5)
        await bucket.acquire(1)
        admitted.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heavy)
        nursery.start_soon(light)
    # The light waiter was behind the heavy one; when that one was cancelled at
    # t=1 the token that had accrued went to the light one at once.
    assert admitted == [1.0]
    assert bucket.available() == 0.0
    assert bucket.stats.cancelled == 1
    assert bucket.waiting == 0


async def test_cancelled_non_head_waiter_leaves_the_queue(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=2.0, initial=0.0)
    done: list[tuple[str, float]] = []

    async def waiter(label: str, deadline_s: float) -> None:
        with trio.move_on_after(deadline_s):
            await bucket.acquire(1)
            done.append((label, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "a", 100.0)
        await trio.sleep(0.1)
        nursery.start_soon(waiter, "b", 0.2)  # gives up while second in line
        await trio.sleep(0.1)
        nursery.start_soon(waiter, "c", 100.0)
    assert done == [("a", 1.0), ("c", 2.0)]


async def test_freeze_holds_everyone_then_resumes_at_the_steady_rate(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=2.0, capacity=10.0)
    bucket.freeze_for(3.0)
    assert bucket.frozen_until == 3.0
    assert not bucket.try_acquire()
    await bucket.acquire()
    # Frozen until 3, and the bucket was emptied: first token at 3 + 1/2.
    assert trio.current_time() == 3.5
    bucket.freeze_until(1.0)  # in the past: ignored
    assert bucket.frozen_until == 3.0
    assert bucket.stats.freezes == 2


async def test_freeze_wakes_a_waiting_head_and_unfreeze_releases(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=1.0, initial=0.0)
    times: list[float] = []

    async def wait_one() -> None:
        await bucket.acquire()
        times.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_one)
        await trio.sleep(0.5)
        bucket.freeze_until(5.0)  # the head was due at 1.0; now later
        await trio.sleep(1.0)
        assert times == []
        bucket.unfreeze()
    assert times == [2.5]  # refill restarted from the unfreeze at 1.5


async def test_invalid_weights_fail_fast(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=2.0)
    for bad in (0, -1, 3, float("nan")):
        with pytest.raises(ValueError):
            await bucket.acquire(bad)
        with pytest.raises(ValueError):
            bucket.acquiring(bad)
        with pytest.raises(ValueError):
            bucket.try_acquire(bad)
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0.0, capacity=1.0)
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=1.0, capacity=1.0, initial=2.0)


def test_bucket_built_outside_trio_starts_full_on_first_use() -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=3.0)

    async def main() -> list[float]:
        await trio.sleep(100.0)
        for _ in range(4):
            await bucket.acquire()
        return [trio.current_time(), bucket.available()]

    now, available = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert (now, available) == (101.0, 0.0)


async def test_bucket_snapshot_is_json(autojump_clock: Any) -> None:
    bucket = TokenBucket(rate_per_s=1.0, capacity=2.0, name="orders")
    await bucket.acquire(2)
    bucket.freeze_for(4.0)
    snap = json.loads(json.dumps(bucket.snapshot()))
    assert snap["name"] == "orders"
    assert snap["kind"] == "token_bucket"
    assert snap["available"] == 0.0
    assert snap["frozen_for_s"] == 4.0
    assert snap["stats"]["acquired"] == 1


# ---------------------------------------------------------------- sliding window


async def test_sliding_window_single(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("w", 3, 1.0)])
    times = []
    for _ in range(7):
        await limiter.acquire()
        times.append(trio.current_time())
    assert times == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]
    assert limiter.try_acquire(2)  # the window is full again at t=2
    await trio.sleep(0.999)
    assert not limiter.try_acquire()  # the t=2 units are still inside the window
    await trio.sleep(0.001)
    assert limiter.try_acquire()


async def test_sliding_window_is_a_true_sliding_log(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("w", 2, 10.0)])
    await limiter.acquire()
    await trio.sleep(4.0)
    await limiter.acquire()
    await limiter.acquire()  # waits for the first one to leave the window
    assert trio.current_time() == 10.0
    await limiter.acquire()  # the one from t=4 leaves at 14
    assert trio.current_time() == 14.0


async def test_several_windows_at_once(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("per_10s", 5, 10.0), Window("per_1s", 2, 1.0)])
    times = []
    for _ in range(6):
        await limiter.acquire()
        times.append(trio.current_time())
    assert times == [0.0, 0.0, 1.0, 1.0, 2.0, 10.0]
    assert limiter.used("per_10s") == 4.0  # the pair at t=0 has left


async def test_per_window_costs(autojump_clock: Any) -> None:
    binance = SlidingWindowLimiter(
        [Window("weight_1m", 100, 60.0), Window("orders_10s", 2, 10.0)], name="binance"
    )
    order = {"weight_1m": 1, "orders_10s": 1}
    await binance.acquire(order)
    await binance.acquire(order)
    await binance.acquire({"weight_1m": 50})  # a depth snapshot is not an order
    assert trio.current_time() == 0.0
    assert not binance.try_acquire(order)
    await binance.acquire(order)
    assert trio.current_time() == 10.0
    await binance.acquire({"weight_1m": 48})  # 1+1+50+1+48 = 101 > 100: wait for t=60
    assert trio.current_time() == 60.0
    snap = json.loads(json.dumps(binance.snapshot()))
    assert snap["windows"]["weight_1m"]["used"] == 49.0
    assert snap["windows"]["orders_10s"] == {"limit": 2, "period_s": 10.0, "used": 0.0}


async def test_invalid_costs(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("a", 5, 1.0), Window("b", 2, 1.0)])
    with pytest.raises(ValueError, match="unknown window"):
        await limiter.acquire({"c": 1})
    with pytest.raises(ValueError, match="exceeds the limit"):
        await limiter.acquire(3)  # 3 > limit of b
    with pytest.raises(ValueError):
        limiter.acquiring({"a": 0})
    with pytest.raises(ValueError):
        limiter.try_acquire({"a": -1})
    assert trio.current_time() == 0.0
    with pytest.raises(ValueError):
        SlidingWindowLimiter([Window("a", 1, 1.0), Window("a", 2, 1.0)])
    with pytest.raises(ValueError):
        SlidingWindowLimiter([])
    with pytest.raises(ValueError):
        Window("x", 0, 1.0)


async def test_observe_usage_corrects_upwards_only_by_default(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("weight_1m", 10, 60.0)])
    await limiter.acquire(2)
    await trio.sleep(5.0)
    assert limiter.observe_usage("weight_1m", 1) == 0.0  # behind us: ignored
    assert limiter.observe_usage("weight_1m", 9) == 7.0  # someone else used 7
    assert limiter.used("weight_1m") == 9.0
    assert limiter.try_acquire(1)
    assert not limiter.try_acquire(1)
    await limiter.acquire(2)  # the 2 from t=0 leave at 60
    assert trio.current_time() == 60.0
    assert limiter.stats.corrections == 1


async def test_observe_usage_may_decrease_when_asked(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("w", 4, 60.0)])
    for _ in range(4):
        await limiter.acquire()
    assert limiter.observe_usage("w", 1, allow_decrease=True) == -3.0
    assert limiter.used("w") == 1.0
    await limiter.acquire(3)
    assert trio.current_time() == 0.0
    with pytest.raises(ValueError):
        limiter.observe_usage("nope", 1)


async def test_observed_usage_wakes_and_delays_a_waiter(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("w", 2, 10.0)])
    await limiter.acquire(2)
    times: list[float] = []

    async def waiter() -> None:
        await limiter.acquire(1)
        times.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)  # due at t=10
        await trio.sleep(3.0)
        limiter.observe_usage("w", 4)  # server says 4 used (2 of them not ours)
    assert times == [13.0]


async def test_sliding_window_freeze_and_cancellation(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("w", 1, 1.0)])
    limiter.freeze_until(2.0)
    with trio.move_on_after(1.0):
        await limiter.acquire()
    assert limiter.used("w") == 0.0  # the cancelled waiter took nothing
    await limiter.acquire()
    assert trio.current_time() == 2.0


async def test_sliding_window_fifo(autojump_clock: Any) -> None:
    limiter = SlidingWindowLimiter([Window("w", 4, 1.0)])
    await limiter.acquire(3)
    order: list[tuple[str, float]] = []

    async def take(label: str, weight: float, arrive_s: float) -> None:
        await trio.sleep(arrive_s)
        await limiter.acquire(weight)
        order.append((label, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "heavy", 4, 0.1)
        nursery.start_soon(take, "light", 1, 0.2)  # would fit now, but waits its turn
    assert order == [("heavy", 1.0), ("light", 2.0)]


# ---------------------------------------------------------------- properties

# Binary-exact values keep float arithmetic exact, so the properties are
# checked with no tolerance at all.
GAPS = st.integers(0, 40).map(lambda k: k / 16)  # 0 to 2.5 s in 1/16 s steps


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
    capacity=st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0]),
    initial_full=st.booleans(),
    requests=st.lists(st.tuples(GAPS, st.integers(1, 8), st.booleans()), max_size=60),
)
def test_token_bucket_core_never_exceeds_capacity_plus_rate_t(
    rate: float, capacity: float, initial_full: bool, requests: list[tuple[float, int, bool]]
) -> None:
    core = TokenBucketCore(rate, capacity, tokens=capacity if initial_full else 0.0)
    now = 0.0
    admitted: list[tuple[float, float]] = []
    for gap, weight, freeze in requests:
        now += gap
        if weight > capacity:
            continue
        if freeze:
            core.freeze_until(now + 0.5)
        ready = core.ready_at(now, weight)
        assert ready >= now
        if ready == now:
            core.take(now, weight)
            admitted.append((now, weight))
        else:
            # The promised instant really is admissible.
            assert copy.deepcopy(core).ready_at(ready, weight) == ready
    for i in range(len(admitted)):
        total = 0.0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            assert total <= capacity + rate * (admitted[j][0] - admitted[i][0])


WINDOW_SETS = st.sampled_from(
    [
        [Window("a", 3, 1.0)],
        [Window("a", 5, 2.0), Window("b", 2, 0.5)],
        [Window("a", 8, 4.0), Window("b", 3, 1.0), Window("c", 1, 0.25)],
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    windows=WINDOW_SETS,
    requests=st.lists(
        st.tuples(GAPS, st.integers(1, 3), st.sets(st.sampled_from("abc")), st.integers(0, 4)),
        max_size=60,
    ),
)
def test_sliding_window_core_never_exceeds_any_window(
    windows: list[Window], requests: list[tuple[float, int, set[str], int]]
) -> None:
    core = SlidingWindowCore(windows)
    names = [w.name for w in windows]
    limits = {w.name: w.limit for w in windows}
    now = 0.0
    # (time, units per window, is_own_admission), in the order they happened.
    records: list[tuple[float, dict[str, float], bool]] = []
    for gap, units, chosen, observed in requests:
        now += gap
        wanted = {n: float(units) for n in chosen if n in names and units <= limits[n]}
        if not wanted:
            # An observation: the peer reports more usage than we counted.
            name = names[observed % len(names)]
            delta = core.observe_usage(name, core.used(name, now) + observed, now)
            assert delta == observed
            if delta:
                records.append((now, {name: delta}, False))
            continue
        cost = core.cost_of(wanted)
        ready = core.ready_at(now, cost)
        assert ready >= now
        if ready == now:
            core.take(now, cost)
            records.append((now, cost, True))
        else:
            # The promise holds (checked on a copy: cores expect monotonic time).
            assert copy.deepcopy(core).ready_at(ready, cost) == ready
    # Right after each admission, every window it touched holds at most its
    # limit, counting everything before it (observed usage included).
    by_name = {w.name: w for w in windows}
    for j, (t_j, cost_j, own) in enumerate(records):
        if not own:
            continue
        for name in cost_j:
            period = by_name[name].period_s
            load = sum(c.get(name, 0.0) for t, c, _ in records[: j + 1] if t > t_j - period)
            assert load <= limits[name], (name, t_j, load)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.sampled_from([1.0, 2.0, 4.0]),
    capacity=st.sampled_from([1.0, 2.0, 4.0]),
    arrivals=st.lists(
        st.tuples(st.sampled_from([0.0625, 0.125, 0.25, 0.5, 1.0]), st.integers(1, 4)),
        min_size=1,
        max_size=15,
    ),
    cancel_index=st.integers(-1, 14),
)
def test_token_bucket_shell_is_fifo_and_as_early_as_the_core_allows(
    rate: float, capacity: float, arrivals: list[tuple[float, int]], cancel_index: int
) -> None:
    """Concurrent waiters against a sequential model of the same core."""
    requests: list[tuple[float, float]] = []
    at = 0.0
    for gap, weight in arrivals:
        at += gap
        requests.append((at, float(min(weight, int(capacity)))))
    admitted: dict[int, float] = {}

    async def main() -> None:
        bucket = TokenBucket(rate_per_s=rate, capacity=capacity)

        async def one(index: int, arrive_s: float, weight: float) -> None:
            await trio.sleep_until(arrive_s)
            if index == cancel_index:
                with trio.move_on_after(0.03):  # never exactly a ready instant
                    await bucket.acquire(weight)
                    admitted[index] = trio.current_time()
                return
            await bucket.acquire(weight)
            admitted[index] = trio.current_time()

        async with trio.open_nursery() as nursery:
            for index, (arrive_s, weight) in enumerate(requests):
                nursery.start_soon(one, index, arrive_s, weight)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    # Model: FIFO, each request as early as the core and its predecessor allow.
    model = TokenBucketCore(rate, capacity)
    previous = 0.0
    for index, (arrive_s, units) in enumerate(requests):
        start = max(arrive_s, previous)
        ready = model.ready_at(start, units)
        if index == cancel_index and ready > arrive_s + 0.03:
            assert index not in admitted  # cancelled: took nothing
            continue
        model.take(ready, units)
        previous = ready
        assert admitted[index] == pytest.approx(ready, abs=1e-9)
    order = sorted(admitted, key=lambda i: (admitted[i], i))
    assert order == sorted(admitted)
