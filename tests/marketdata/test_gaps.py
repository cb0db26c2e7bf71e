"""No silent loss (issue 13, findings 12-14), against a scripted venue in virtual time.

* a catch-up whose ``historicalTrades`` fetch fails or is refused records the
  missing range as an OPEN gap at once, with its bounds, durably; the repair
  task backfills it when the venue serves it again (also after a restart);
* open gaps and a backfill that keeps failing degrade health with a reason and
  show in ``/status`` and ``/metrics``;
* a lost last trade before a quiet market is found by the tail check within
  ``tail_check_interval_s``, not only when the stream is declared stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from daemon.errors import ApiKeyRejectedError
from daemon.health import HealthLevel
from daemon.metrics import MetricFamily
from daemon.model.marketdata import Trade
from daemon.store import GapState
from tests.helpers.marketdata_fakes import (
    VENUE,
    FakeClient,
    FakeExchange,
    StaticLink,
    open_store,
    running_service,
    settings,
    stored_ids,
    wait_for,
)

S = "BTCUSDT"


def sample(families: list[MetricFamily], name: str, **labels: str) -> float | None:
    """The value of the sample of family ``name`` with exactly ``labels`` (``None``: absent)."""
    wanted = tuple(sorted(labels.items()))
    for family in families:
        if family.name != name:
            continue
        for sample_labels, value in family_samples(family):
            if tuple(sorted(sample_labels)) == wanted:
                return value
    return None


def family_samples(family: MetricFamily) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    return [(s.labels, float(s.value)) for s in family.samples]


async def stored_gaps(store: Any) -> list[tuple[int, int, GapState, str]]:
    return [(g.from_id, g.to_id, g.state, g.reason) for g in await store.market.gaps(venue=VENUE)]


class Refusing:
    """Makes ``client.historical_trades`` refuse (an API-key error) until ``lift()``."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.original = client.historical_trades
        self.calls = 0

        async def refuse(*args: Any, **kwargs: Any) -> list[Trade]:
            self.calls += 1
            await trio.sleep(0.01)
            raise ApiKeyRejectedError("-2014 API-key format invalid.", venue=VENUE, code=-2014)

        client.historical_trades = refuse  # type: ignore[method-assign]

    def lift(self) -> None:
        self.client.historical_trades = self.original  # type: ignore[method-assign]


async def test_a_refused_catch_up_records_the_gap_at_once_and_it_is_filled_later(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    client = FakeClient(exchange)
    config = settings(tail_check_interval_s=0)  # the catch-up alone must record it
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(120):
            async with running_service(store, StaticLink(client), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 1)
                healthy = service.check()
                assert healthy == (HealthLevel.HEALTHY, None), healthy
                refusing = Refusing(client)
                exchange.drop()
                for _ in range(3):  # made while disconnected, then the market goes quiet
                    exchange.trade(publish=False)
                await wait_for(lambda: service.feed_stats.catch_ups == 2)
                # Recorded at once, with its bounds, in the store (not only in memory).
                assert await stored_gaps(store) == [(2, 4, GapState.OPEN, "reconnect")]
                assert service.symbol_stats[S].open_gaps == {(2, 4): "reconnect"}
                level, reasons = service.check()
                assert level is HealthLevel.DEGRADED
                assert reasons is not None
                assert any("BTCUSDT: 1 open gap(s), 3 trade(s) not stored" in r for r in reasons)
                assert any("2..4" in r for r in reasons)
                families = service.metrics()
                assert sample(families, "tradingd_marketdata_open_gaps", venue=VENUE, symbol=S) == 1
                assert (
                    sample(families, "tradingd_marketdata_gap_trades", venue=VENUE, symbol=S) == 3
                )
                status = service.status()
                assert status["open_gaps"] == {"count": 1, "trades": 3, "symbols": [S]}
                assert status["symbols"][S]["gaps"]["open_gaps"] == [
                    {"from_id": 2, "to_id": 4, "trades": 3, "reason": "reconnect"}
                ]
                # The repair keeps asking; a backfill that keeps failing is a reason too.
                await wait_for(lambda: service.feed_stats.backfill_failures >= 3)
                reasons = service.check()[1] or []
                assert any("backfill failing" in r and "-2014" in r for r in reasons), reasons
                # Capture goes on meanwhile.
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 5)
                refusing.lift()
                await wait_for(lambda: not service.symbol_stats[S].open_gaps)
                assert service.check() == (HealthLevel.HEALTHY, None)
                families = service.metrics()
                assert sample(families, "tradingd_marketdata_open_gaps", venue=VENUE, symbol=S) == 0
        assert await stored_ids(store) == [1, 2, 3, 4, 5]
        assert await stored_gaps(store) == [(2, 4, GapState.BACKFILLED, "reconnect")]


async def test_a_failing_catch_up_does_not_hold_up_the_stream(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """5xx on every historicalTrades: the gap is recorded, live trades keep being stored."""
    exchange = FakeExchange()
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(120):
            async with running_service(
                store, StaticLink(FakeClient(exchange)), settings(tail_check_interval_s=0)
            ) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 1)
                exchange.fail_historical = 10**9
                exchange.drop()
                exchange.trade(publish=False)
                exchange.trade(publish=False)
                await wait_for(lambda: service.feed_stats.catch_ups == 2)
                assert await stored_gaps(store) == [(2, 3, GapState.OPEN, "reconnect")]
                for _ in range(5):
                    exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 8)
                assert await stored_ids(store) == [1, 4, 5, 6, 7, 8]
                exchange.fail_historical = 0
                await wait_for(lambda: not service.symbol_stats[S].open_gaps)
        assert await stored_ids(store) == list(range(1, 9))
        assert await stored_gaps(store) == [(2, 3, GapState.BACKFILLED, "reconnect")]


async def test_an_open_gap_survives_a_restart_and_is_backfilled_then(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    client = FakeClient(exchange)
    config = settings(tail_check_interval_s=0)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(120):
            async with running_service(store, StaticLink(client), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 1)
                refusing = Refusing(client)
                exchange.trade(publish=False)
                exchange.trade(publish=False)
                exchange.trade()  # reveals 2..3, whose backfill is refused
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 4)
                await wait_for(lambda: service.symbol_stats[S].open_gaps)
            # A new service on the same store: resumes after 4, the gap only in the store.
            assert await stored_gaps(store) == [(2, 3, GapState.OPEN, "sequence jump")]
            refusing.lift()
            async with running_service(store, StaticLink(client), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                await wait_for(lambda: not service.symbol_stats[S].open_gaps)
                assert service.check() == (HealthLevel.HEALTHY, None)
        assert await stored_ids(store) == [1, 2, 3, 4]
        assert await stored_gaps(store) == [(2, 3, GapState.BACKFILLED, "sequence jump")]


async def test_a_lost_last_trade_before_a_quiet_market_is_found_by_the_tail_check(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    config = settings(tail_check_interval_s=5.0)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(120):
            async with running_service(store, StaticLink(FakeClient(exchange)), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 1)
                exchange.trade(publish=False)  # lost on the stream; then nothing more
                lost_at = trio.current_time()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 2)
                # Within one interval (+ the writer's flush), not after stale_after_s.
                assert trio.current_time() - lost_at <= 5.0 + 1.0
                assert service.symbol_stats[S].tail_gaps == 1
                checks = exchange.calls.get("recent_trades", 0)
                # Quiet on: one cheap check per interval, and nothing more is found.
                await trio.sleep(20)
                assert 3 <= exchange.calls.get("recent_trades", 0) - checks <= 5
                assert service.symbol_stats[S].tail_gaps == 1
        assert await stored_ids(store) == [1, 2]
        assert await stored_gaps(store) == [(2, 2, GapState.BACKFILLED, "tail check")]


async def test_no_tail_checks_while_trades_flow_or_when_disabled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    for interval, quiet_checks in ((5.0, True), (0.0, False)):
        exchange = FakeExchange()
        config = settings(tail_check_interval_s=interval)
        async with await open_store(tmp_path / f"md-{interval}.db") as store:
            with trio.fail_after(120):
                async with running_service(
                    store, StaticLink(FakeClient(exchange)), config
                ) as service:
                    await wait_for(lambda: service.feed_stats.catch_ups)
                    before = exchange.calls.get("recent_trades", 0)
                    for _ in range(20):  # a trade a second: never quiet for 5 s
                        exchange.trade()
                        await trio.sleep(1)
                    assert exchange.calls.get("recent_trades", 0) == before
                    await trio.sleep(12)
                    quiet = exchange.calls.get("recent_trades", 0) - before
                    assert (quiet > 0) is quiet_checks, (interval, quiet)
                    assert service.symbol_stats[S].tail_gaps == 0


async def test_a_failing_tail_backfill_records_the_tail_as_an_open_gap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    exchange = FakeExchange()
    config = settings(tail_check_interval_s=2.0)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(120):
            async with running_service(store, StaticLink(FakeClient(exchange)), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 1)
                exchange.fail_historical = 10**9
                exchange.trade(publish=False)
                exchange.trade(publish=False)
                await wait_for(lambda: service.symbol_stats[S].open_gaps)
                assert await stored_gaps(store) == [(2, 3, GapState.OPEN, "tail check")]
                assert service.check()[0] is HealthLevel.DEGRADED
                exchange.fail_historical = 0
                await wait_for(lambda: not service.symbol_stats[S].open_gaps)
        assert await stored_ids(store) == [1, 2, 3]
        assert await stored_gaps(store) == [(2, 3, GapState.BACKFILLED, "tail check")]


async def test_health_is_degraded_while_a_recorded_gap_is_open(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A sequence jump whose backfill is refused (recorded OPEN before too): loss is visible."""
    exchange = FakeExchange()
    client = FakeClient(exchange)
    config = settings(tail_check_interval_s=0, backfill_failures_warn=2)
    async with await open_store(tmp_path / "md.db") as store:
        with trio.fail_after(120):
            async with running_service(store, StaticLink(client), config) as service:
                await wait_for(lambda: service.feed_stats.catch_ups)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 1)
                refusing = Refusing(client)
                for _ in range(4):
                    exchange.trade(publish=False)
                exchange.trade()
                await wait_for(lambda: service.symbol_stats[S].last_committed_id == 6)
                await wait_for(lambda: service.symbol_stats[S].gaps_left_open == 1)
                level, reasons = service.check()
                assert level is HealthLevel.DEGRADED, reasons
                assert reasons is not None
                assert any(
                    r.startswith("marketdata fake BTCUSDT: 1 open gap(s), 4 trade(s)")
                    and "ids 2..5" in r
                    for r in reasons
                ), reasons
                await wait_for(lambda: refusing.calls >= 2)
                reasons = service.check()[1] or []
                assert any("backfill failing: " in r for r in reasons), reasons
                families = service.metrics()
                assert (
                    sample(
                        families, "tradingd_marketdata_backfill_consecutive_failures", venue=VENUE
                    )
                    or 0
                ) >= 2
                assert (
                    sample(families, "tradingd_marketdata_gap_trades", venue=VENUE, symbol=S) == 4
                )
                refusing.lift()
                await wait_for(lambda: service.check() == (HealthLevel.HEALTHY, None))
        assert await stored_ids(store) == [1, 2, 3, 4, 5, 6]
