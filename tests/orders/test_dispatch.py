"""Tests for daemon.orders.dispatch: per-account ordering, admission, retirement, stopping.

Time is virtual (``autojump_clock``): handlers ``await trio.sleep(d)`` to
simulate work, and every start and end is recorded, so "in order" and "never
two at once" are checked on exact intervals rather than hoped for.
"""

from __future__ import annotations

import itertools
import json
import logging
import zlib
from collections import Counter, defaultdict

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import TransientError
from daemon.orders.dispatch import (
    CAPACITY_KEY,
    MAX_QUEUES_KEY,
    Dispatcher,
    DispatcherClosedError,
    DispatchMode,
    QueueFullError,
    TooManyQueuesError,
    WorkItem,
    shard_for,
)

MODES = [DispatchMode.SHARDED, DispatchMode.DYNAMIC]


@attrs.frozen
class Span:
    account: str
    key: str
    start: float
    end: float | None


class HandlerFailed(Exception):
    pass


@attrs.define
class Recorder:
    """A handler that sleeps per item, records its span and checks per-account exclusion."""

    default_s: float = 1.0
    durations: dict[str, float] = attrs.Factory(dict)
    failing: set[str] = attrs.Factory(set)
    spans: list[Span] = attrs.Factory(list)
    active: Counter[str] = attrs.Factory(Counter)
    max_active: Counter[str] = attrs.Factory(Counter)
    max_total: int = 0
    cancelled: list[str] = attrs.Factory(list)

    async def __call__(self, item: WorkItem) -> None:
        start = trio.current_time()
        self.active[item.account] += 1
        self.max_active[item.account] = max(
            self.max_active[item.account], self.active[item.account]
        )
        self.max_total = max(self.max_total, sum(self.active.values()))
        index = len(self.spans)
        self.spans.append(Span(item.account, item.key, start, None))
        try:
            await trio.sleep(self.durations.get(item.key, self.default_s))
            if item.key in self.failing:
                raise HandlerFailed(f"boom on {item.key}")
        except trio.Cancelled:
            self.cancelled.append(item.key)
            raise
        finally:
            self.active[item.account] -= 1
            self.spans[index] = attrs.evolve(self.spans[index], end=trio.current_time())

    def keys_of(self, account: str) -> list[str]:
        return [s.key for s in self.spans if s.account == account]

    def span(self, key: str) -> Span:
        (found,) = [s for s in self.spans if s.key == key]
        return found


def item(account: str, key: str, kind: str = "place") -> WorkItem:
    return WorkItem(account=account, key=key, kind=kind)


def assert_serial_in_order(rec: Recorder, account: str, expected: list[str]) -> None:
    spans = [s for s in rec.spans if s.account == account]
    assert [s.key for s in spans] == expected
    for earlier, later in itertools.pairwise(spans):
        assert earlier.end is not None
        assert earlier.end <= later.start, (earlier, later)
    assert rec.max_active[account] <= 1


def accounts_by_shard(shards: int) -> dict[int, list[str]]:
    by_shard: dict[int, list[str]] = defaultdict(list)
    for i in range(200):
        name = f"acct-{i}"
        by_shard[shard_for(name, shards)].append(name)
    assert len(by_shard) == shards
    return by_shard


# ---------------------------------------------------------------------------------- ordering


@pytest.mark.parametrize("mode", MODES)
async def test_per_account_order_kept_and_items_never_overlap(
    autojump_clock: trio.testing.MockClock, mode: DispatchMode
) -> None:
    accounts = ["alice", "bob", "carol", "dave"]
    rec = Recorder()
    expected: dict[str, list[str]] = {a: [] for a in accounts}
    for n in range(6):
        for a in accounts:
            key = f"{a}-{n}"
            # Varying durations: a later item of one account is often shorter than
            # an earlier one, so a reordering or an overlap would show.
            rec.durations[key] = [1.5, 0.25, 0.75, 0.0, 2.0, 0.5][(n + len(a)) % 6]
            expected[a].append(key)
    d = Dispatcher(rec, mode=mode, shards=2, capacity=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        for n in range(6):
            for a in accounts:
                assert d.submit(item(a, f"{a}-{n}"))
            await trio.sleep(0.1)  # interleave submissions with running work
        assert await d.drain(1000.0) == 0
    for a in accounts:
        assert_serial_in_order(rec, a, expected[a])
    assert d.started == d.completed == 24
    assert d.failed == d.cancelled == 0


async def test_dynamic_runs_different_accounts_side_by_side(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        for a in ["a", "b", "c"]:
            d.submit(item(a, f"{a}-1"))
        await trio.sleep(0.5)
        assert d.running == 3
        assert {r["account"] for r in d.snapshot()["running"]} == {"a", "b", "c"}
        assert await d.drain(10.0) == 0
    assert trio.current_time() == 1.0  # three 1 s items in 1 s: they overlapped
    assert rec.max_total == 3


async def test_sharded_overlaps_across_shards_and_serialises_within_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    by_shard = accounts_by_shard(4)
    first, second = by_shard[0][0], by_shard[1][0]  # different shards
    mate = by_shard[0][1]  # same shard as `first`
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.SHARDED, shards=4)
    assert d.shard_of(first) == d.shard_of(mate) != d.shard_of(second)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item(first, "f1"))
        d.submit(item(second, "s1"))
        d.submit(item(mate, "m1"))
        assert await d.drain(10.0) == 0
    assert rec.span("f1").start == rec.span("s1").start == 0.0  # different shards overlap
    # Same shard: the mate waits for the head of its queue (head-of-line, by design).
    assert rec.span("m1").start == rec.span("f1").end == 1.0


def test_shard_mapping_is_crc32_and_stable() -> None:
    # Literal vectors: the mapping must not depend on the process (hash() is salted).
    assert zlib.crc32(b"alice") == 663665735
    assert [shard_for(n, 4) for n in ["alice", "bob", "carol", "main"]] == [3, 0, 3, 0]
    assert shard_for("ünïcode", 7) == 5  # encoded as UTF-8
    for i in range(100):
        name = f"account-{i}"
        for shards in (1, 2, 3, 8):
            assert shard_for(name, shards) == zlib.crc32(name.encode()) % shards
    d = Dispatcher(Recorder(), mode=DispatchMode.SHARDED, shards=4)
    assert d.shard_of("alice") == 3
    with pytest.raises(ValueError, match="shards must be >= 1, got 0"):
        shard_for("alice", 0)


async def test_sharded_items_go_to_the_shard_queue(autojump_clock: trio.testing.MockClock) -> None:
    d = Dispatcher(Recorder(), mode=DispatchMode.SHARDED, shards=4, capacity=10)
    for _ in range(2):
        d.submit(item("alice", "k"))
    d.submit(item("bob", "k"))
    snap = d.snapshot()
    assert snap["queues"] == {"shard-0": 1, "shard-1": 0, "shard-2": 0, "shard-3": 2}
    assert d.depth("alice") == d.depth("carol") == 2  # carol shares alice's shard
    assert d.queued == 3


# ---------------------------------------------------------------------------------- admission


@pytest.mark.parametrize("mode", MODES)
async def test_reserved_submit_never_fails_and_full_queue_is_refused(
    autojump_clock: trio.testing.MockClock, mode: DispatchMode
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=mode, shards=1, capacity=3)
    # Nothing runs yet: queued items and reservations both count.
    assert d.submit(item("alice", "k0"))
    d.reserve("alice")
    d.reserve("alice")
    with pytest.raises(QueueFullError) as info:
        d.reserve("alice")
    err = info.value
    assert isinstance(err, TransientError)
    assert err.account == "alice"
    assert err.capacity == 3
    assert err.retry_after_s > 0
    assert "'alice'" in str(err)
    assert CAPACITY_KEY in str(err)
    assert "3" in str(err)
    assert d.submit(item("alice", "refused")) is False  # unreserved: caller keeps it durable
    assert d.refused == 2
    # The reserved slots are honoured although the queue is "full".
    assert d.submit(item("alice", "k1"), reserved=True) is True
    assert d.submit(item("alice", "k2"), reserved=True) is True
    assert d.depth("alice") == 3
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        assert await d.drain(100.0) == 0
    assert_serial_in_order(rec, "alice", ["k0", "k1", "k2"])


async def test_release_gives_the_slot_back(autojump_clock: trio.testing.MockClock) -> None:
    d = Dispatcher(Recorder(), mode=DispatchMode.DYNAMIC, capacity=1)
    d.reserve("alice")
    with pytest.raises(QueueFullError):
        d.reserve("alice")
    d.release("alice")
    d.reserve("alice")
    assert d.snapshot()["reserved"] == {"alice": 1}
    d.release("alice")
    with pytest.raises(ValueError, match=r"release\('alice'\) without a reservation"):
        d.release("alice")
    with pytest.raises(ValueError, match="without a reservation"):
        d.submit(item("alice", "k"), reserved=True)
    with pytest.raises(ValueError, match="without a reservation"):
        d.release("nobody")


async def test_queue_full_retry_after_follows_the_service_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=0.5)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, capacity=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("a", "k1"))
        await trio.sleep(1.0)  # k1 took 0.5 s
        assert d.submit(item("a", "k2"))
        assert not d.submit(item("a", "k3"))  # capacity 1: k2 is still queued
        await trio.testing.wait_all_tasks_blocked()
        assert d.submit(item("a", "k3"))  # k2 runs now, k3 waits
        with pytest.raises(QueueFullError) as info:
            d.reserve("a")
        assert info.value.retry_after_s == 0.5
        d.abort()


# ---------------------------------------------------------------------------------- dynamic


async def test_idle_queue_retires_after_idle_s_exactly_and_is_recreated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, idle_s=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("a", "k1"))  # runs 0 → 1, then idle from t=1
        await trio.sleep_until(5.999)
        assert "a" in d.snapshot()["queues"]
        await trio.sleep_until(6.0)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == 6.0
        assert "a" not in d.snapshot()["queues"]
        assert d.queues_retired == 1
        assert d.depth("a") == 0
        # A later submit opens a fresh queue, and its item runs.
        assert d.submit(item("a", "k2"))
        assert d.queues_created == 2
        assert await d.drain(10.0) == 0
    assert rec.keys_of("a") == ["k1", "k2"]
    assert rec.span("k2").start == 6.0


async def test_idle_timer_restarts_after_each_item(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, idle_s=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("a", "k1"))
        await trio.sleep_until(4.0)
        d.submit(item("a", "k2"))  # runs 4 → 5: the queue is idle from t=5
        await trio.sleep_until(9.999)
        assert d.queues_retired == 0
        await trio.sleep_until(10.0)
        await trio.testing.wait_all_tasks_blocked()
        assert d.queues_retired == 1
        d.abort()


async def test_a_reservation_pins_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, idle_s=1.0, max_queues=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.reserve("a")  # opens the queue, which counts toward the cap
        with pytest.raises(TooManyQueuesError):
            d.reserve("b")
        await trio.sleep(10.0)  # far past idle_s, but pinned: not retired
        assert d.snapshot()["queues"] == {"a": 0}
        assert d.submit(item("a", "k"), reserved=True)  # runs 10 → 11
        await trio.sleep_until(11.999)
        assert d.queues_retired == 0
        await trio.sleep_until(12.0)
        await trio.testing.wait_all_tasks_blocked()
        assert d.snapshot()["queues"] == {}
        # A released reservation unpins; the idle period starts at the release.
        d.reserve("b")
        await trio.sleep_until(17.0)
        assert d.snapshot()["queues"] == {"b": 0}
        d.release("b")
        await trio.sleep_until(17.999)
        assert d.snapshot()["queues"] == {"b": 0}
        await trio.sleep_until(18.0)
        await trio.testing.wait_all_tasks_blocked()
        assert d.snapshot()["queues"] == {}
        assert d.queues_retired == 2
        d.abort()


async def test_cap_on_live_queues_and_it_frees_when_one_retires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, max_queues=2, idle_s=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("a", "a1"))
        await trio.sleep(2.0)
        d.submit(item("b", "b1"))  # a idle since t=1, b idle from t=3
        with pytest.raises(TooManyQueuesError) as info:
            d.reserve("c")
        err = info.value
        assert isinstance(err, TransientError)
        assert MAX_QUEUES_KEY in str(err)
        assert "= 2" in str(err)
        assert "'c'" in str(err)
        assert err.max_queues == 2
        assert err.retry_after_s == 9.0  # a retires at t=11
        with pytest.raises(TooManyQueuesError):
            d.submit(item("c", "c1"))
        # Existing accounts are unaffected by the cap.
        assert d.submit(item("a", "a2"))  # a runs 2 → 3, idle again from t=3
        await trio.sleep_until(13.0)
        await trio.testing.wait_all_tasks_blocked()
        assert d.snapshot()["queues"] == {}
        assert d.submit(item("c", "c1"))
        d.reserve("d")
        assert await d.drain(10.0) == 0
    assert rec.keys_of("c") == ["c1"]
    assert d.snapshot()["totals"]["queues_created"] == 4


async def test_submit_at_the_moment_of_retirement_is_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The submitter wakes at the same virtual instant the idle timer fires. Trio
    # runs the two in either order (at random), so repeat: over 20 rounds both
    # orders occur (a miss has probability ~2**-20). Either way the item must
    # run, on the old queue (submitted before the timeout was handled) or on a
    # new one (after the retirement).
    for round_ in range(21):
        settle_first = round_ == 0  # once: deterministically after the retirement
        rec = Recorder(default_s=1.0)
        d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, idle_s=2.0)
        base = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(d.run)
            d.submit(item("a", "k1"))  # idle from base+1, timer fires at base+3
            await trio.sleep_until(base + 3.0)
            if settle_first:
                await trio.testing.wait_all_tasks_blocked()
                assert d.queues_retired == 1
            assert d.submit(item("a", "k2"))
            assert await d.drain(10.0) == 0
        assert rec.keys_of("a") == ["k1", "k2"]
        assert d.queues_created == 1 + d.queues_retired


# ---------------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("mode", MODES)
async def test_drain_finishes_queued_work_within_the_deadline(
    autojump_clock: trio.testing.MockClock, mode: DispatchMode
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=mode)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        for n in range(3):
            d.submit(item("a", f"a{n}"))
        d.submit(item("b", "b0"))
        d.reserve("a")  # committed by the caller while the drain runs
        unstarted: list[int] = []

        async def drain() -> None:
            unstarted.append(await d.drain(10.0))

        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(DispatcherClosedError, match="draining"):
            d.reserve("a")
        with pytest.raises(DispatcherClosedError):
            d.submit(item("a", "late"))
        assert d.snapshot()["state"] == "draining"
        assert d.submit(item("a", "a3"), reserved=True)  # a reserved slot is honoured
    assert unstarted == [0]
    assert trio.current_time() == 4.0  # finished early, not at the deadline
    assert rec.keys_of("a") == ["a0", "a1", "a2", "a3"]
    assert d.completed == 5
    assert d.snapshot()["state"] == "stopped"


async def test_drain_deadline_too_short_returns_the_unstarted_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=DispatchMode.SHARDED, shards=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        for n in range(5):
            d.submit(item("a", f"a{n}"))
        assert await d.drain(2.5) == 2
        assert trio.current_time() == 2.5
    assert rec.keys_of("a") == ["a0", "a1", "a2"]
    assert rec.cancelled == ["a2"]  # running at the deadline: cancelled
    assert (d.completed, d.cancelled, d.started) == (2, 1, 3)
    assert d.queued == 2
    # Stopped: a reserved submit is not lost, it is handed back.
    d2 = Dispatcher(rec, mode=DispatchMode.DYNAMIC)
    d2.reserve("a")
    assert await d2.drain(1.0) == 0  # never ran: stops at once
    assert d2.submit(item("a", "x"), reserved=True) is False


async def test_drain_waits_for_an_outstanding_reservation_until_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = Dispatcher(Recorder(), mode=DispatchMode.DYNAMIC)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.reserve("a")
        assert await d.drain(3.0) == 0
        assert trio.current_time() == 3.0
    assert d.submit(item("a", "k"), reserved=True) is False


async def test_drain_rejects_a_negative_deadline_without_closing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = Dispatcher(Recorder(), mode=DispatchMode.DYNAMIC)
    with pytest.raises(ValueError, match="timeout_s must be >= 0, got -1"):
        await d.drain(-1)
    assert d.submit(item("a", "k"))  # still open


@pytest.mark.parametrize("mode", MODES)
async def test_abort_returns_the_unstarted_count(
    autojump_clock: trio.testing.MockClock, mode: DispatchMode
) -> None:
    rec = Recorder(default_s=1.0)
    d = Dispatcher(rec, mode=mode, shards=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        for n in range(4):
            d.submit(item("a", f"a{n}"))
        d.submit(item("b", "b0"))
        await trio.sleep(0.5)
        expected = 3 if mode is DispatchMode.DYNAMIC else 4  # b0 waits behind a's in one shard
        assert d.abort() == expected
        with pytest.raises(DispatcherClosedError, match="stopped"):
            d.submit(item("a", "late"))
    assert trio.current_time() == 0.5
    assert d.started == 5 - expected
    assert d.completed == 0
    assert d.queued == expected


async def test_abort_counts_an_item_handed_to_a_waiting_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The worker is blocked in receive(): the item goes straight to it, not into
    # the buffer. Aborted before the worker runs, it must still count as not started.
    rec = Recorder()
    d = Dispatcher(rec, mode=DispatchMode.SHARDED, shards=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await trio.testing.wait_all_tasks_blocked()
        d.submit(item("a", "k"))
        assert d.abort() == 1
    assert rec.spans == []
    assert d.started == 0


async def test_cancelling_run_from_outside_stops_and_refuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = Dispatcher(Recorder(), mode=DispatchMode.DYNAMIC)
    d.reserve("a")
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("b", "k1"))
        d.submit(item("b", "k2"))
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert d.cancelled == 1  # k1 was running
    assert d.queued == 1  # k2 never started
    with pytest.raises(DispatcherClosedError):
        d.reserve("a")
    assert d.submit(item("a", "k"), reserved=True) is False
    # A stopped dispatcher's run returns at once.
    with trio.fail_after(1):
        await d.run()


async def test_run_twice_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    d = Dispatcher(Recorder(), mode=DispatchMode.SHARDED)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        with pytest.raises(RuntimeError, match="already running"):
            await d.run()
        d.abort()


# ---------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_handler_does_not_stop_later_items(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    mode: DispatchMode,
) -> None:
    caplog.set_level(logging.ERROR, logger="tradingd.orders.dispatch")
    rec = Recorder(default_s=1.0, failing={"a1"})
    d = Dispatcher(rec, mode=mode, shards=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        for n in range(3):
            d.submit(item("a", f"a{n}"))
            d.submit(item("b", f"b{n}"))
        assert await d.drain(100.0) == 0
    assert rec.keys_of("a") == ["a0", "a1", "a2"]
    assert rec.keys_of("b") == ["b0", "b1", "b2"]
    assert (d.failed, d.completed) == (1, 5)
    (record,) = [r for r in caplog.records if r.name == "tradingd.orders.dispatch"]
    assert "'a1'" in record.getMessage()
    assert "'a'" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], HandlerFailed)


# ---------------------------------------------------------------------------------- status


async def test_is_queued_covers_waiting_and_running_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=1.0, failing={"k2"})
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC)
    assert not d.is_queued("k1")
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("a", "k1"))
        d.submit(item("a", "k2", kind="cancel"))
        d.submit(item("a", "k1"))  # the same key twice
        assert d.is_queued("k1") and d.is_queued("k1", "place")
        assert d.is_queued("k2", "cancel") and not d.is_queued("k2", "place")
        await trio.sleep(0.5)  # k1 running
        assert d.is_queued("k1")
        await trio.sleep(1.0)  # k2 running, one k1 still waiting
        assert d.is_queued("k1") and d.is_queued("k2")
        await trio.sleep(1.0)  # k2 failed; the second k1 running
        assert not d.is_queued("k2")
        assert d.is_queued("k1")
        await trio.sleep(1.0)
        assert not d.is_queued("k1")
        d.abort()


async def test_snapshot_is_json_and_shows_running_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(default_s=2.0)
    d = Dispatcher(rec, mode=DispatchMode.DYNAMIC, name="exec")
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        d.submit(item("a", "a0"))
        d.submit(item("a", "a1", kind="cancel"))
        d.reserve("b")
        await trio.sleep(0.5)
        snap = json.loads(json.dumps(d.snapshot()))
        assert snap["name"] == "exec"
        assert snap["mode"] == "dynamic"
        assert snap["state"] == "running"
        assert snap["queues"] == {"a": 1, "b": 0}
        assert snap["reserved"] == {"b": 1}
        assert snap["running"] == [
            {"queue": "a", "account": "a", "key": "a0", "kind": "place", "running_s": 0.5}
        ]
        assert snap["totals"]["queued"] == 1
        assert snap["totals"]["submitted"] == 2
        assert snap["totals"]["started"] == 1
        assert snap["totals"]["live_queues"] == 2
        d.abort()


def test_constructor_rejects_bad_values() -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="shards must be >= 1, got 0"):
        Dispatcher(rec, mode=DispatchMode.SHARDED, shards=0)
    with pytest.raises(ValueError, match=f"{CAPACITY_KEY}.*got 0"):
        Dispatcher(rec, mode=DispatchMode.SHARDED, capacity=0)
    with pytest.raises(ValueError, match=MAX_QUEUES_KEY):
        Dispatcher(rec, mode=DispatchMode.DYNAMIC, max_queues=0)
    with pytest.raises(ValueError, match="idle_s"):
        Dispatcher(rec, mode=DispatchMode.DYNAMIC, idle_s=0)
    with pytest.raises(ValueError, match="'round-robin'"):
        Dispatcher(rec, mode="round-robin")  # type: ignore[arg-type]
    assert Dispatcher(rec, mode="dynamic").mode is DispatchMode.DYNAMIC  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- property

STEP = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),  # account
    st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0]),  # wait before submitting
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]),  # handler duration
    st.booleans(),  # through reserve() + submit(reserved=True)
    st.integers(0, 9),  # 0: the handler raises
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    shards=st.integers(1, 3),
    capacity=st.integers(1, 4),
    idle_s=st.sampled_from([0.25, 0.5, 1.0, 100.0]),
    max_queues=st.integers(1, 4),
    steps=st.lists(STEP, max_size=40),
)
def test_property_per_account_sequence_equals_submit_sequence(
    mode: DispatchMode,
    shards: int,
    capacity: int,
    idle_s: float,
    max_queues: int,
    steps: list[tuple[str, float, float, bool, int]],
) -> None:
    """Random interleavings, durations, failures and retirements: order and exclusion hold."""
    rec = Recorder()
    accepted: dict[str, list[str]] = defaultdict(list)

    async def main() -> None:
        d = Dispatcher(
            rec,
            mode=mode,
            shards=shards,
            capacity=capacity,
            idle_s=idle_s,
            max_queues=max_queues,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(d.run)
            for n, (account, wait_s, duration_s, reserve, fail) in enumerate(steps):
                await trio.sleep(wait_s)
                key = f"{account}-{n}"
                rec.durations[key] = duration_s
                if fail == 0:
                    rec.failing.add(key)
                try:
                    if reserve:
                        d.reserve(account)
                        assert d.submit(item(account, key), reserved=True)
                        queued = True
                    else:
                        queued = d.submit(item(account, key))
                except (QueueFullError, TooManyQueuesError):
                    queued = False
                if queued:
                    accepted[account].append(key)
                assert d.snapshot()["totals"]["live_queues"] <= (
                    shards if mode is DispatchMode.SHARDED else max_queues
                )
            assert await d.drain(10_000.0) == 0
        assert d.started == d.completed + d.failed == sum(len(v) for v in accepted.values())
        assert d.failed == len(rec.failing & {k for v in accepted.values() for k in v})
        assert not any(d.is_queued(k) for v in accepted.values() for k in v)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for account in "abcd":
        assert_serial_in_order(rec, account, accepted[account])
