"""The intake against a real Redis and the real order pipeline (store, client, simulator).

Each test has its own uuid-named stream, group and dead-letter stream
(the ``streams`` fixture deletes them). The promises: one intent per
``message_id`` however often its entry is delivered; an entry acknowledged
only after its intent committed; pending entries re-read at start; entries
of a consumer that died taken over by the claim sweep; poison dead-lettered
with the original entry, the error and the delivery count; Redis going away
degrades health and is survived.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from daemon.health import HealthLevel
from daemon.orders.intent import OrderIntent
from daemon.risk.limits import LimitTable, RiskLimits
from tests.helpers.orders import limit_request, running_pipeline
from tests.helpers.sim import running_sim, sim_config
from tests.intake.support import FlakyGateway, RedisProxy, Streams, running_intake, wait_for


def coid(message_id: str) -> str:
    return OrderIntent.from_request(limit_request(message_id)).client_order_id


async def test_entries_become_one_intent_per_message_id_in_stream_order(
    tmp_path: Path, streams: Streams
) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            running_intake(streams.settings(batch=7), run.service) as intake,
        ):
            ids = [f"m-{i}" for i in range(12)]
            for message_id in ids:
                await streams.add_intent(limit_request(message_id))
            # A producer retrying: the same message ids again.
            for message_id in ids[:4]:
                await streams.add_intent(limit_request(message_id))
            await wait_for(lambda: intake.stats.processed == 16, "16 entries processed")
            assert (intake.stats.created, intake.stats.duplicates) == (12, 4)
            assert await streams.pending() == 0
            records = await run.service.list_orders(account="main", limit=100)
            assert sorted(r.message_id for r in records) == sorted(ids)
            # Submission order (seq) is stream order.
            by_seq = sorted(records, key=lambda r: r.seq)
            assert [r.message_id for r in by_seq] == ids
            for message_id in ids:
                assert len(await sim.audit(coid(message_id))) <= 1
            status = intake.status()
            assert status["connected"] and status["consumer"] == "live"
            assert intake.check() == (HealthLevel.HEALTHY, None)


async def test_pending_entries_are_reread_at_start(tmp_path: Path, streams: Streams) -> None:
    await streams.create_group()
    for i in range(3):
        await streams.add_intent(limit_request(f"p-{i}"))
    # A previous incarnation of this consumer read them and died before acking.
    assert len(await streams.read_as("live")) == 3
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            running_intake(streams.settings(), run.service) as intake,
        ):
            await wait_for(lambda: intake.stats.created == 3, "3 recovered intents")
            assert intake.stats.recovered == 3
            assert intake.stats.claimed == 0
            assert await streams.pending() == 0


async def test_a_consumer_that_died_after_the_commit_is_claimed_without_a_second_intent(
    tmp_path: Path, streams: Streams
) -> None:
    await streams.create_group()
    body = limit_request("c-1")
    await streams.add_intent(body)
    await streams.add_intent(limit_request("c-2"))
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            # Consumer "dead" reads both, commits c-1 and dies before its XACK.
            assert len(await streams.read_as("dead")) == 2
            first = await run.service.submit(body)
            assert first.created
            settings = streams.settings(claim_idle_ms=200, claim_interval_s=0.1)
            async with running_intake(settings, run.service) as intake:
                await wait_for(lambda: intake.stats.processed == 2, "both entries processed")
                assert intake.stats.claimed == 2
                # c-1 is the same intent (a duplicate), c-2 a new one.
                assert (intake.stats.duplicates, intake.stats.created) == (1, 1)
                assert await streams.pending() == 0
            records = await run.service.list_orders(account="main")
            assert sorted(r.message_id for r in records) == ["c-1", "c-2"]
            assert (await run.service.get(coid("c-1"))).client_order_id == first.client_order_id
            assert len(await sim.audit(first.client_order_id)) <= 1


async def test_poison_goes_to_the_dead_letter_stream_with_the_original_entry(
    tmp_path: Path, streams: Streams
) -> None:
    limits = LimitTable(default=RiskLimits(max_orders_per_window=None, max_order_notional=None))
    poison: dict[bytes, tuple[bytes, str]] = {}

    async def add(field: bytes, value: bytes, expect: str) -> None:
        poison[await streams.add((field, value))] = (value, expect)

    await add(b"intent", b"{not json", "not valid JSON")
    await add(b"intent", b"\xff\xfe\x00", "not valid UTF-8")
    await add(b"intent", b"[" * 50 + b"]" * 50, "nests")
    await add(b"order", b"{}", "unknown field")
    await add(b"intent", json.dumps({"message_id": "x-1"}).encode(), "invalid order intent")
    await add(b"intent", json.dumps(limit_request("x-2", account="nope")).encode(), "nope")
    good = await streams.add_intent(limit_request("x-3"))
    # The same message id for a different order: 409.
    await add(b"intent", json.dumps(limit_request("x-3", price="1.00")).encode(), "different price")
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db", limits=limits) as run,
            running_intake(streams.settings(), run.service) as intake,
        ):
            await wait_for(lambda: intake.stats.dead_lettered == len(poison), "dead letters")
            await wait_for(lambda: intake.stats.created == 1, "the good entry")
            assert await streams.pending() == 0
    letters = {letter[b"entry_id"]: letter for letter in await streams.dead_letters()}
    assert set(letters) == set(poison)
    assert good not in letters
    for entry_id, (value, expect) in poison.items():
        letter = letters[entry_id]
        assert expect in letter[b"error"].decode("utf-8", "replace"), letter
        assert letter[b"deliveries"] == b"1"
        assert letter[b"stream"] == streams.stream.encode()
        assert letter[b"consumer"] == b"live"
        original = [v for k, v in letter.items() if k.startswith(b"field.")]
        assert original == [value]
        assert json.loads(letter[b"answer"])["status"] in (400, 409)


async def test_an_entry_delivered_too_often_is_dead_lettered_unless_recorded(
    tmp_path: Path, streams: Streams
) -> None:
    await streams.create_group()
    never = await streams.add_intent(limit_request("d-1"))
    recorded = await streams.add_intent(limit_request("d-2"))
    await streams.read_as("live")
    for _ in range(3):  # each re-read of the pending list is one more delivery
        await streams.read_as("live", cursor="0")
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            await run.service.submit(limit_request("d-2"))
            settings = streams.settings(max_deliveries=3)
            async with running_intake(settings, run.service) as intake:
                await wait_for(lambda: intake.stats.dead_lettered == 1, "one dead letter")
                await wait_for(lambda: intake.stats.duplicates == 1, "the recorded one acked")
                assert await streams.pending() == 0
            records = await run.service.list_orders(account="main")
            assert [r.message_id for r in records] == ["d-2"]
    (letter,) = await streams.dead_letters()
    assert letter[b"entry_id"] == never
    assert letter[b"deliveries"] == b"5"
    assert b"delivered 5 times" in letter[b"error"]
    assert recorded != never


async def test_transient_refusals_keep_the_entry_pending_and_retry_it(
    tmp_path: Path, streams: Streams
) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            gateway = FlakyGateway(run.service, refusals=3)
            async with running_intake(streams.settings(), gateway) as intake:
                await streams.add_intent(limit_request("t-1"))
                await wait_for(lambda: intake.stats.created == 1, "created after the refusals")
                assert intake.stats.retries == 3
                assert gateway.calls == 4
                assert intake.stats.dead_lettered == 0
                assert await streams.pending() == 0
            assert len(await run.service.list_orders(account="main")) == 1


async def test_redis_unreachable_degrades_health_and_recovers(
    tmp_path: Path, streams: Streams
) -> None:
    port = int(streams.url.rsplit(":", 1)[1].split("/")[0])
    proxy = RedisProxy(port)
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            await nursery.start(proxy.run)
            settings = streams.settings(redis_url=proxy.url)
            async with running_intake(settings, run.service) as intake:
                await wait_for(lambda: intake.stats.redis_errors >= 3, "failed connects")
                level, reason = intake.check()
                assert level is HealthLevel.DEGRADED
                assert reason is not None and "redis not connected" in reason
                assert intake.status()["last_error"]
                await streams.add_intent(limit_request("r-1"))
                proxy.forwarding = True
                await wait_for(lambda: intake.stats.created == 1, "r-1 after recovery")
                assert intake.check() == (HealthLevel.HEALTHY, None)
                # The connection is cut mid-flow: retried, nothing lost or doubled.
                errors = intake.stats.redis_errors
                await proxy.cut()
                await streams.add_intent(limit_request("r-2"))
                await wait_for(lambda: intake.stats.created == 2, "r-2 after the cut")
                assert intake.stats.redis_errors > errors
                assert await streams.pending() == 0
            records = await run.service.list_orders(account="main")
            assert sorted(r.message_id for r in records) == ["r-1", "r-2"]
            nursery.cancel_scope.cancel()
