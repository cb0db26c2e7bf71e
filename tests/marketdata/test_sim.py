"""Capture against the real simulator over real sockets (127.0.0.1, ports 0, real clock).

The simulator's own record of what it published (``GET /sim/trades``) is the
truth the store is compared with; the client, the stream and the store are
the production ones. Faults are armed through ``POST /sim/faults``.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from daemon.channels import Queues
from daemon.config import MarketDataConfig
from daemon.marketdata import MarketDataService
from daemon.model.marketdata import Trade
from daemon.store import GapState, SqliteStore
from daemon.supervise import Supervisor, SupervisorPolicy
from daemon.venues.binance import BinanceVenue
from daemon.venues.sim.config import MarketConfig, SimConfig
from tests.helpers.marketdata_fakes import StaticLink, wait_for
from tests.helpers.sim import SimHarness, client_config, running_sim
from tests.helpers.sim import sim_config as one_symbol_sim
from tests.helpers.sim_control import PublishedTrade
from tests.helpers.supervision import supervising

S = "BTCUSDT"
VENUE = "sim"


def sim_config(**market: Any) -> SimConfig:
    """BTCUSDT only, trading: 200 events/s, half of them trades (unless ``market`` says)."""
    return one_symbol_sim(
        market=MarketConfig(**{"events_per_s": 200.0, "trade_probability": 0.5, **market})
    )


def client(sim: SimHarness) -> BinanceVenue:
    """The test client of :func:`~tests.helpers.sim.client_config`, reconnecting sooner."""
    config = client_config(
        sim,
        name=VENUE,
        reconnect_initial_s=0.02,
        reconnect_max_s=0.1,
        stale_after_s=10.0,
        retry_max_elapsed_s=20.0,
        limiter_max_wait_s=30.0,
    )
    return BinanceVenue(config, rng=random.Random(3))


def settings(**overrides: Any) -> MarketDataConfig:
    fields: dict[str, Any] = {
        "symbols": (S,),
        "chunk_size": 200,
        "flush_interval_s": 0.05,
        "snapshot_interval_s": 0,
        "backfill_limit": 50,
        "retry_initial_s": 0.01,
        "retry_max_s": 0.1,
        "heartbeat_interval_s": 2.0,
        "book_snapshot_limit": 100,
    }
    fields.update(overrides)
    return MarketDataConfig(**fields)


@asynccontextmanager
async def capture(
    sim: SimHarness, store: SqliteStore, config: MarketDataConfig
) -> AsyncIterator[MarketDataService]:
    venue = client(sim)
    service = MarketDataService(
        VENUE, StaticLink(venue), store, store.dead_letters, Queues(), config, rng=random.Random(1)
    )
    supervisor = Supervisor("marketdata", service.children(), SupervisorPolicy(max_restarts=3))
    try:
        async with supervising(supervisor):
            yield service
    finally:
        await venue.aclose()


async def stored(store: SqliteStore) -> list[Trade]:
    return await store.market.trades(VENUE, S)


def assert_equal(stored: Sequence[Trade], published: Sequence[PublishedTrade]) -> None:
    assert [t.trade_id for t in stored] == [p.trade_id for p in published]
    for trade, truth in zip(stored, published, strict=True):
        assert trade.price == truth.price
        assert trade.quantity == truth.quantity
        assert trade.trade_time_ms == truth.trade_time_ms
        assert trade.buyer_is_maker is truth.buyer_is_maker


async def last_id(sim: SimHarness) -> int:
    """The venue's last published trade id."""
    return (await sim.last_ids([S]))[S]


async def settle(sim: SimHarness, store: SqliteStore) -> int:
    """Pause the market and wait until the store has the venue's last trade."""
    await sim.set_market(paused=True)
    last = await last_id(sim)

    async def done() -> bool:
        return await store.market.last_trade_id(VENUE, S) == last

    await wait_for(done, poll_s=0.02)
    return last


async def test_stream_drops_are_backfilled_and_the_store_equals_the_venue(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            await SqliteStore.open(tmp_path / "md.db") as store,
            capture(sim, store, settings()) as service,
        ):
            await wait_for(lambda: service.feed_stats.catch_ups)
            await sim.arm(kind="ws_drop", every_s=0.4)
            await wait_for(lambda: sum(service.feed_stats.disconnects.values()) >= 4)
            await sim.clear_faults()
            last = await settle(sim, store)
            first = (await stored(store))[0].trade_id
            assert_equal(await stored(store), await sim.published(S, first, last))
            stats = service.symbol_stats[S]
            assert stats.trades_backfill > 0 and stats.trades_stream > 0
            status = json.loads(json.dumps(service.status()))  # JSON-able for /status
            assert status["feed"]["stream"]["connections"] >= 4
            assert status["symbols"][S]["last_committed_id"] == last
            gaps = await store.market.gaps(venue=VENUE, symbol=S)
    assert gaps and all(g.state is GapState.BACKFILLED for g in gaps)
    assert {g.reason for g in gaps} <= {"reconnect", "sequence jump"}
    assert service.writer_stats.rows_failed == 0


async def test_restart_resumes_from_the_last_stored_trade_and_backfills_the_downtime(
    tmp_path: Path,
) -> None:
    path = tmp_path / "md.db"
    with trio.fail_after(30):
        async with running_sim(sim_config()) as sim:
            async with (
                await SqliteStore.open(path) as store,
                capture(sim, store, settings()) as first,
            ):
                await wait_for(lambda: first.symbol_stats[S].inserted >= 20)
            stopped_at = await last_id(sim)
            await wait_for(lambda: _later(sim, stopped_at + 30), poll_s=0.05)  # downtime
            async with (
                await SqliteStore.open(path) as store,
                capture(sim, store, settings()) as second,
            ):
                last = await settle(sim, store)
                ids = [t.trade_id for t in await stored(store)]
                assert_equal(await stored(store), await sim.published(S, ids[0], last))
                gaps = await store.market.gaps(venue=VENUE)
                restart = [g for g in gaps if g.reason == "restart"]
                assert second.symbol_stats[S].trades_backfill >= 30
    assert len(restart) == 1 and restart[0].state is GapState.BACKFILLED
    assert restart[0].from_id <= stopped_at + 1


async def _later(sim: SimHarness, trade_id: int) -> bool:
    return await last_id(sim) >= trade_id


async def test_history_expired_at_the_venue_is_recorded_as_an_unrecoverable_gap(
    tmp_path: Path,
) -> None:
    path = tmp_path / "md.db"
    config = sim_config(paused=True, trade_probability=1.0, trade_retention=40)
    with trio.fail_after(30):
        async with running_sim(config) as sim:
            async with await SqliteStore.open(path) as store:
                async with capture(sim, store, settings()) as first:
                    await wait_for(lambda: first.feed_stats.catch_ups)
                    await sim.set_market(steps=10)
                    await settle(sim, store)
                kept = await store.market.last_trade_id(VENUE, S)
                assert kept is not None
            # While the daemon is down, the venue trades on and forgets the oldest.
            while await last_id(sim) < kept + 100:
                await sim.set_market(steps=20)
            async with (
                await SqliteStore.open(path) as store,
                capture(sim, store, settings()) as second,
            ):
                last = await settle(sim, store)
                await wait_for(lambda: second.symbol_stats[S].gap_records_committed == 2)
                gaps = await store.market.gaps(venue=VENUE)
                ids = [t.trade_id for t in await stored(store)]
                truth = await sim.published(S, ids[0], last)
    retained_from = last - 40 + 1
    lost, backfilled = gaps
    assert (lost.from_id, lost.to_id, lost.state) == (
        kept + 1,
        retained_from - 1,
        GapState.UNRECOVERABLE,
    )
    assert (backfilled.from_id, backfilled.to_id, backfilled.state) == (
        retained_from,
        last,
        GapState.BACKFILLED,
    )
    # Everything else is exactly what the venue published.
    assert ids == [t.trade_id for t in truth if not lost.from_id <= t.trade_id <= lost.to_id]
    assert second.symbol_stats[S].trades_unrecoverable == lost.to_id - lost.from_id + 1


async def test_malformed_frames_are_dead_lettered_and_replaced_trades_backfilled(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config()) as sim,
            await SqliteStore.open(tmp_path / "md.db") as store,
            capture(sim, store, settings()) as service,
        ):
            await wait_for(lambda: service.feed_stats.catch_ups)
            # Every 5th trade frame is garbage *instead of* the trade.
            await sim.arm(kind="ws_malformed", stream="btcusdt@trade", every_n=5, replace=True)
            await wait_for(lambda: service.feed_stats.malformed >= 5)
            await sim.clear_faults()
            # Even when a garbled frame replaced the very last trade before the
            # market paused, the feed asks the venue once the stream is quiet.
            with trio.fail_after(5):
                last = await settle(sim, store)
            first = (await stored(store))[0].trade_id
            assert_equal(await stored(store), await sim.published(S, first, last))
            await wait_for(lambda: service.feed_stats.dead_lettered == service.feed_stats.malformed)
            letters = await store.dead_letters.list(source=f"marketdata.{VENUE}.stream")
    assert len(letters) == service.feed_stats.malformed
    assert all(letter.error_type == "daemon.errors.VenueDecodeError" for letter in letters)
    assert all(isinstance(letter.payload, str | bytes) and letter.payload for letter in letters)
    assert service.symbol_stats[S].trades_backfill > 0


async def test_the_local_book_matches_the_venue_and_snapshots_are_stored(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            running_sim(sim_config(events_per_s=100.0)) as sim,
            await SqliteStore.open(tmp_path / "md.db") as store,
            capture(sim, store, settings(snapshot_interval_s=0.2, snapshot_depth=5)) as service,
        ):
            latest = service.latest(S)
            await latest.wait_value(lambda v: v.in_sync and v.bids and v.asks)
            await trio.sleep(0.5)  # diff updates applied on top of the snapshot
            state = await sim.set_market(paused=True)
            update_id = state["symbols"][S]["lastUpdateId"]
            view = await latest.wait_value(lambda v: v.last_update_id == update_id)
            depth = await client(sim).depth(S, 20)
            await wait_for(lambda: service.snapshot_stats.inserted >= 2)
            snapshots = await store.market.book_snapshots(VENUE, S)
    assert depth.last_update_id == update_id
    assert view.in_sync
    assert view.bids == depth.bids[: len(view.bids)] and view.asks == depth.asks[: len(view.asks)]
    assert view.best_bid is not None and view.best_ask is not None
    assert view.best_bid[0] < view.best_ask[0]
    assert all(len(s.bids) <= 5 and len(s.asks) <= 5 for s in snapshots)
    assert snapshots[-1].sequence_id <= update_id
