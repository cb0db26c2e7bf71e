"""The pipeline against a scripted venue, in virtual time: gaps, backpressure, store errors.

Every test runs the service's real children under a real supervisor with a
real SQLite store (blocking calls inline, so the autojump clock is exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.channels import Queues
from daemon.errors import ApiKeyRejectedError
from daemon.health import HealthLevel
from daemon.marketdata import MarketDataService
from daemon.model.marketdata import Trade
from daemon.store import GapState, StoreFullError, StoreReadOnlyError
from daemon.store.marketdata_values import WriteSummary
from tests.helpers.marketdata_fakes import (
    VENUE,
    FakeClient,
    FakeExchange,
    StaticLink,
    open_store,
    restarts,
    running_service,
    settings,
    stored_ids,
    wait_for,
)

S = "BTCUSDT"


def link(exchange: FakeExchange) -> StaticLink:
    return StaticLink(FakeClient(exchange))


def same(stored: Sequence[Trade], published: Sequence[Trade]) -> None:
    """Stored trades are the published ones (values included), ignoring event times."""
    assert [t.trade_id for t in stored] == [t.trade_id for t in published]
    for a, b in zip(stored, published, strict=True):
        assert (a.price, a.quantity, a.buyer_is_maker, a.trade_time_ms) == (
            b.price,
            b.quantity,
            b.buyer_is_maker,
            b.trade_time_ms,
        )


async def caught_up(store: Any, exchange: FakeExchange, symbol: str = S) -> bool:
    last = await store.market.last_trade_id(VENUE, symbol)
    return last == exchange.next_id[symbol] - 1


async def test_live_trades_are_committed_in_chunks_with_lag_and_checkpoint(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    exchange.trade()  # before capture starts: not captured
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(
                store, link(exchange), settings(flush_interval_s=0.25)
            ) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                await wait_for(lambda: service.symbol_stats[S].last_enqueued_id == 1)
                for _ in range(120):
                    exchange.trade()
                    await trio.sleep(0.01)
                await wait_for(lambda: caught_up(store, exchange))
                status = service.status()
        stored = await store.market.trades(VENUE, S)
        same(stored, exchange.trades[S][1:])
        checkpoint = await store.market.checkpoint(VENUE, S, "trades")
        assert checkpoint is not None and checkpoint.last_trade_id == 121
    sym = status["symbols"][S]
    assert sym["last_committed_id"] == 121
    assert sym["trades"]["inserted"] == 120 and sym["trades"]["duplicates"] == 0
    # Commit lag: trades wait at most flush_interval_s (plus a 10 ms tick) for their chunk.
    lag = sym["lag_ms"]
    assert lag["samples"] == 120
    assert 0 <= lag["p50"] <= 260 and lag["max"] <= 260
    assert status["writer"]["rows_inserted"] == 120
    assert status["writer"]["chunks_committed"] >= 3  # 1.2 s of trades at 0.25 s per chunk
    assert status["health"]["level"] == "healthy"


async def test_a_missed_message_is_backfilled_in_pages_and_recorded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(
                store, link(exchange), settings(backfill_limit=10)
            ) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_enqueued_id == 1)
                for _ in range(25):
                    exchange.trade(publish=False)  # lost on the wire
                exchange.trade()  # id 27 reveals the gap 2..26
                await wait_for(lambda: caught_up(store, exchange))
                await wait_for(lambda: service.symbol_stats[S].gap_records_committed == 1)
                stats = service.symbol_stats[S]
        same(await store.market.trades(VENUE, S), exchange.trades[S])
        gaps = await store.market.gaps(venue=VENUE, symbol=S)
    assert stats.backfill_requests == 3  # 25 ids in pages of 10
    assert stats.trades_backfill == 25 and stats.trades_stream == 2
    assert [(g.from_id, g.to_id, g.state, g.reason) for g in gaps] == [
        (2, 26, GapState.BACKFILLED, "sequence jump")
    ]


async def test_a_reconnect_catches_up_even_when_the_market_goes_quiet(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange(reconnect_delay_s=1.0)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                for _ in range(5):
                    exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                exchange.drop()
                for _ in range(7):  # while disconnected; then nothing more trades
                    exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                assert service.feed_stats.disconnects == {"closed": 1}
                assert exchange.connects == 2
                await wait_for(lambda: service.symbol_stats[S].gap_records_committed == 1)
        same(await store.market.trades(VENUE, S), exchange.trades[S])
        gaps = await store.market.gaps(venue=VENUE)
    assert [(g.from_id, g.to_id, g.state, g.reason) for g in gaps] == [
        (6, 12, GapState.BACKFILLED, "reconnect")
    ]


async def test_transient_rest_failures_are_retried_not_skipped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_enqueued_id == 1)
                exchange.fail_historical = 4
                exchange.trade(publish=False)
                exchange.trade(publish=False)
                exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                # The failed fetch left an open gap (the live trade went on);
                # the repair retries until the venue serves it.
                await wait_for(lambda: not service.symbol_stats[S].open_gaps)
                assert service.feed_stats.rest_failures == 4
                assert service.feed_stats.backfill_failures == 0
                assert service.feed_stats.backfill_failures_total == 4
        same(await store.market.trades(VENUE, S), exchange.trades[S])
        gaps = await store.market.gaps(venue=VENUE)
    assert [(g.from_id, g.to_id, g.state) for g in gaps] == [(2, 3, GapState.BACKFILLED)]


async def test_restart_resumes_from_the_store_and_backfills_the_downtime(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    path = tmp_path / "md.db"
    with trio.fail_after(60):
        async with (
            await open_store(path) as store,
            running_service(store, link(exchange), settings()) as first,
        ):
            await wait_for(lambda: first.feed_stats.catch_ups)
            for _ in range(10):
                exchange.trade()
                await trio.sleep(0.05)
            await wait_for(lambda: caught_up(store, exchange))
        for _ in range(15):  # the daemon is down
            exchange.trade()
            await trio.sleep(0.05)
        async with await open_store(path) as store:
            async with running_service(store, link(exchange), settings()) as second:
                await wait_for(lambda: caught_up(store, exchange))
                await wait_for(lambda: second.symbol_stats[S].gap_records_committed == 1)
                assert second.symbol_stats[S].duplicates == 0
            same(await store.market.trades(VENUE, S), exchange.trades[S])
            gaps = await store.market.gaps(venue=VENUE)
    assert [(g.from_id, g.to_id, g.state, g.reason) for g in gaps] == [
        (11, 25, GapState.BACKFILLED, "restart")
    ]


async def test_history_the_venue_no_longer_has_is_recorded_as_an_unrecoverable_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange(retention=20)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_enqueued_id == 1)
                for _ in range(50):
                    exchange.trade(publish=False)  # 2..51 missed; the venue keeps 32..51
                exchange.trade()  # 52
                await wait_for(lambda: caught_up(store, exchange))
                await wait_for(lambda: service.symbol_stats[S].gap_records_committed == 2)
                metrics = {f.name: f for f in service.metrics()}
        ids = await stored_ids(store)
        gaps = await store.market.gaps(venue=VENUE)
    kept_from = exchange.next_id[S] - exchange.retention  # the oldest trade the venue kept
    assert ids == [1, *range(kept_from, 53)]
    assert [(g.from_id, g.to_id, g.state) for g in gaps] == [
        (2, kept_from - 1, GapState.UNRECOVERABLE),
        (kept_from, 51, GapState.BACKFILLED),
    ]
    assert gaps[0].resolution is not None and "history" in gaps[0].resolution
    lost = metrics["tradingd_marketdata_trades_unrecoverable"].samples
    assert [s.value for s in lost] == [kept_from - 2]
    recorded = {
        dict(s.labels)["state"]: s.value for s in metrics["tradingd_marketdata_gaps"].samples
    }
    assert recorded == {"backfilled": 1.0, "unrecoverable": 1.0, "open": 0.0}


class SlowMarket:
    """The real market tables, but every trade insert takes ``delay_s`` (a slow disk)."""

    def __init__(self, market: Any, delay_s: float) -> None:
        self._market = market
        self.delay_s = delay_s

    async def insert_trades(self, trades: Sequence[Trade], **kwargs: Any) -> WriteSummary:
        await trio.sleep(self.delay_s)
        return await self._market.insert_trades(trades, **kwargs)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._market, name)


class FailingMarket(SlowMarket):
    """Trade inserts raise ``error`` the next ``failures`` times (a transient store error)."""

    def __init__(self, market: Any, failures: int, error: Exception) -> None:
        super().__init__(market, 0.0)
        self.failures = failures
        self.error = error
        self.calls = 0

    async def insert_trades(self, trades: Sequence[Trade], **kwargs: Any) -> WriteSummary:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        return await super().insert_trades(trades, **kwargs)


class WrappedStore:
    def __init__(self, store: Any, market: Any) -> None:
        self.market = market
        self.dead_letters = store.dead_letters


async def test_a_slow_writer_makes_the_feed_block_and_nothing_is_dropped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    config = settings(trades_queue_capacity=10, chunk_size=5, flush_interval_s=0.05, lag_warn_s=1.5)
    async with await open_store(tmp_path / "md.db") as store:
        slow = WrappedStore(store, SlowMarket(store.market, delay_s=1.0))
        with trio.fail_after(600):
            async with running_service(slow, link(exchange), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                depths: list[int] = []
                for _ in range(200):  # 200 trades/s against a writer doing 5 trades/s
                    exchange.trade()
                    await trio.sleep(0.005)
                    depths.append(service.trades_queue.stats()["depth"])
                await trio.sleep(3)
                blocked = service.feed_stats.blocked_since is not None
                level, reasons = service.check()
                metrics = {f.name: f for f in service.metrics()}
                await wait_for(lambda: caught_up(store, exchange), poll_s=1.0)
                final = service.status()
                # The queue bookkeeping drained with the queue.
                assert not service.enqueued_at and service.queue_age_s() is None
                assert service.symbol_stats[S].queued == 0 and service.symbol_stats[S].pending == 0
        same(await store.market.trades(VENUE, S), exchange.trades[S])
    assert blocked
    assert max(depths) == 10 and service.feed_stats.max_queue_depth <= 10
    assert final["feed"]["put_waits"] > 0 and final["feed"]["put_wait_s_total"] > 1.0
    assert metrics["tradingd_marketdata_put_waits"].samples[0].value > 0
    # Health reports the backpressure and the consumer lag while the writer is behind.
    assert level is HealthLevel.DEGRADED and reasons is not None
    assert any("writer behind" in r and "10/10" in r for r in reasons), reasons
    assert any("consumer lag" in r for r in reasons), reasons
    assert final["health"]["level"] == "healthy"
    assert final["symbols"][S]["trades"]["duplicates"] == 0


async def test_store_errors_keep_the_chunk_back_off_and_resume(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        failing = FailingMarket(
            store.market, failures=6, error=StoreFullError("store x: disk full", path="x")
        )
        config = settings(retry_initial_s=0.5, retry_max_s=2.0, trades_queue_capacity=20)
        with trio.fail_after(60):
            async with running_service(
                WrappedStore(store, failing), link(exchange), config
            ) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                for _ in range(100):  # more than the queue holds: the feed blocks
                    exchange.trade()
                await wait_for(lambda: service.writer.failing)
                level, reasons = service.check()
                assert level is HealthLevel.UNHEALTHY
                assert reasons is not None and "StoreFullError" in reasons[0]
                assert service.metrics()  # renders while failing
                await wait_for(lambda: caught_up(store, exchange))
                assert not service.writer.failing
                assert service.check()[0] is HealthLevel.HEALTHY
                writer = service.writer_stats
                # ~9 s of failures (> 3 heartbeat intervals): the writer backing off
                # and the feed blocked on the full queue are alive, not hung.
                assert writer.consecutive_failures == 0
                assert service.feed_stats.put_wait_s_total > 6.0
                assert restarts(service) == {"ingest:fake": 0, "feed:fake": 0}
        same(await store.market.trades(VENUE, S), exchange.trades[S])
    assert failing.failures == 0 and writer.retries == 6
    assert writer.store_errors == {"StoreFullError": 6}


async def test_a_read_only_database_makes_the_store_unhealthy_until_it_clears(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                await store.call(lambda c: c.execute("PRAGMA query_only = ON"))
                for _ in range(20):
                    exchange.trade()
                await wait_for(lambda: service.writer.failing)
                assert store.check()[0] is HealthLevel.UNHEALTHY
                assert service.check()[0] is HealthLevel.UNHEALTHY
                assert "StoreReadOnlyError" in (service.writer_stats.last_error or "")
                await trio.sleep(5)
                assert await stored_ids(store) == [1]
                await store.call(lambda c: c.execute("PRAGMA query_only = OFF"))
                await wait_for(lambda: caught_up(store, exchange))
                assert store.check()[0] is HealthLevel.HEALTHY
        same(await store.market.trades(VENUE, S), exchange.trades[S])
    assert StoreReadOnlyError.__name__ in service.writer_stats.store_errors


async def test_malformed_frames_are_dead_lettered_with_the_raw_payload_and_skipped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                exchange.malformed('{"e":"trade","t":')
                exchange.malformed(b"\xff\x00binary")
                exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                await wait_for(lambda: service.feed_stats.dead_lettered == 2)
                # A garbled frame that *replaced* the last trade before a quiet
                # spell: the feed asks the venue as soon as the stream is quiet.
                exchange.trade(publish=False)
                exchange.malformed("garbage instead of trade 4")
                with trio.fail_after(1.5):
                    await wait_for(lambda: caught_up(store, exchange))
        letters = await store.dead_letters.list(source=f"marketdata.{VENUE}.stream")
        same(await store.market.trades(VENUE, S), exchange.trades[S])
    assert [letter.payload for letter in letters] == [
        '{"e":"trade","t":',
        b"\xff\x00binary",
        "garbage instead of trade 4",
    ]
    assert letters[0].error_type == "daemon.errors.VenueDecodeError"
    assert service.feed_stats.malformed == 3


async def test_books_sync_resync_on_a_gap_and_are_published_and_snapshotted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    for _ in range(10):
        exchange.depth_change(publish=False)
    config = settings(snapshot_interval_s=1.0, snapshot_depth=2, view_depth=3)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), config) as service:
                latest = service.latest(S)
                view = await latest.wait_value(lambda v: v.in_sync)
                assert view.last_update_id == 1010
                for _ in range(5):
                    exchange.depth_change()
                    await trio.sleep(0.1)
                view = await latest.wait_value(lambda v: v.last_update_id == 1015)
                book = service.book(S)
                assert book.levels() == (exchange.bids[S], exchange.asks[S])
                assert view.bids == tuple(sorted(exchange.bids[S].items(), reverse=True))[:3]
                depth_calls = exchange.calls["depth"]
                exchange.depth_change(publish=False)  # lost: the next one shows a gap
                exchange.depth_change()
                await wait_for(lambda: book.resyncs == 1)
                view = await latest.wait_value(lambda v: v.in_sync and v.last_update_id == 1017)
                assert exchange.calls["depth"] == depth_calls + 1
                assert book.levels() == (exchange.bids[S], exchange.asks[S])
                await trio.sleep(2.5)  # snapshot rounds; the book no longer changes
                status = service.status()["symbols"][S]["book"]
        stored = await store.market.book_snapshots(VENUE, S)
    assert status["state"] == "synced" and status["resyncs"] == 1
    assert stored[-1].sequence_id == 1017
    assert stored[-1].bids == tuple(sorted(exchange.bids[S].items(), reverse=True))[:2]
    assert len({(s.server_time_ms, s.sequence_id) for s in stored}) == len(stored)
    assert service.snapshot_stats.unchanged >= 1


async def test_trades_queued_when_the_feed_restarts_are_not_lost_or_duplicated(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A crash of the feed (a bug, a heartbeat miss) keeps the resume point and the queue."""
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, link(exchange), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                for _ in range(5):
                    exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                crash = trio.Event()
                original = service.feed._on_trade

                async def on_trade(ctx: Any, trade: Trade) -> None:
                    if trade.trade_id == 8 and not crash.is_set():
                        crash.set()
                        raise RuntimeError("bug")
                    await original(ctx, trade)

                service.feed._on_trade = on_trade  # type: ignore[method-assign]
                for _ in range(5):
                    exchange.trade()
                await crash.wait()
                for _ in range(5):
                    exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                assert exchange.connects == 2
                assert restarts(service)["feed:fake"] == 1
        same(await store.market.trades(VENUE, S), exchange.trades[S])


def test_service_children_and_queues_are_declared() -> None:
    queues = Queues()
    store: Any = WrappedStore(_NoStore(), None)
    service = MarketDataService(
        "x", StaticLink(None), store, store.dead_letters, queues, settings(symbols=("AB", "CD"))
    )
    assert [c.name for c in service.children()] == ["ingest:x", "feed:x"]
    assert [c.critical for c in service.children()] == [True, False]
    assert all(c.heartbeat_interval_s == 2.0 for c in service.children())
    by_name = {q["name"]: q for q in queues.snapshot()}
    assert by_name["marketdata.x.trades"]["overflow"] == "block"
    assert by_name["marketdata.x.trades"]["capacity"] == 100
    assert by_name["marketdata.x.depth"]["overflow"] == "conflate"
    assert by_name["marketdata.x.depth"]["capacity"] == 2
    assert by_name["marketdata.x.stream"]["overflow"] == "block"
    # Nothing connected yet: degraded, with the reason.
    level, reasons = service.check()
    assert level is HealthLevel.DEGRADED and reasons == ["marketdata x: stream not connected"]
    with pytest.raises(ValueError, match="already exists"):
        MarketDataService("x", StaticLink(None), store, store.dead_letters, queues, settings())
    with_snapshots = MarketDataService(
        "y",
        StaticLink(None),
        store,
        None,
        queues,
        settings(snapshot_interval_s=1.0),  # type: ignore[arg-type]
    )
    assert [c.name for c in with_snapshots.children()][-1] == "snapshots:y"


class _NoStore:
    dead_letters = None


class LateLink:
    """A venue link whose venue answers only after ``delay_s``."""

    def __init__(self, client: FakeClient, delay_s: float) -> None:
        self.client = client
        self.delay_s = delay_s

    async def wait_up(self) -> FakeClient:
        await trio.sleep(self.delay_s)
        return self.client


async def test_a_venue_that_is_down_at_start_delays_capture_without_restarts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            late = LateLink(FakeClient(exchange), delay_s=20.0)
            async with running_service(store, late, settings()) as service:
                await trio.sleep(10)
                assert service.check() == (
                    HealthLevel.DEGRADED,
                    ["marketdata fake: stream not connected"],
                )
                await wait_for(lambda: service.feed_stats.catch_ups)
                assert trio.current_time() >= 20
                exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                assert restarts(service) == {"ingest:fake": 0, "feed:fake": 0}


async def test_a_backfill_the_venue_refuses_for_good_is_recorded_open_and_capture_goes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    client = FakeClient(exchange)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(60):
            async with running_service(store, StaticLink(client), settings()) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))

                async def refuse(*args: Any, **kwargs: Any) -> list[Trade]:
                    raise ApiKeyRejectedError("-2015 Invalid API-key", venue=VENUE, code=-2015)

                client.historical_trades = refuse  # type: ignore[method-assign]
                exchange.trade(publish=False)
                exchange.trade(publish=False)
                exchange.trade()
                await wait_for(lambda: caught_up(store, exchange))
                await wait_for(lambda: service.symbol_stats[S].gaps_left_open == 1)
        gaps = await store.market.gaps(venue=VENUE)
        ids = await stored_ids(store)
    assert ids == [1, 4]
    assert [(g.from_id, g.to_id, g.state) for g in gaps] == [(2, 3, GapState.OPEN)]
