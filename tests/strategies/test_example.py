"""Tests of the built-in QuoteStrategy against an in-memory gateway, in virtual time."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import trio

from daemon.errors import RiskRejectedError
from daemon.model.instruments import SymbolInfo
from daemon.orders.gateway import EntrySaturatedError, EntryUnavailableError
from daemon.orders.intent import IntentProblem, IntentValidationError, ProblemCode
from daemon.risk.checks import RiskReason
from daemon.strategies import QuoteOptions, QuoteStrategy, StrategyContext, StrategyOptionsError
from tests.helpers.strategy_fakes import RecordingGateway, StaticPrices, book_view, symbol_info

SYMBOL = "BTCUSDT"
ACCOUNT = "main"
OPTIONS = {"symbol": SYMBOL, "quantity": "0.0015", "interval_s": 2.0, "max_orders": 2}


def make(
    *,
    options: dict[str, Any] | None = None,
    gateway: RecordingGateway | None = None,
    prices: StaticPrices | None = None,
    info: Callable[[str], SymbolInfo | None] | None = None,
    beats: list[float] | None = None,
    account: str | None = ACCOUNT,
) -> tuple[QuoteStrategy, RecordingGateway, StaticPrices]:
    gateway = gateway or RecordingGateway()
    # mid 100.10: BUY at 100.10 * 0.999 = 99.9999 -> 99.99; SELL at 100.2001 -> 100.21
    prices = prices or StaticPrices(book_view(SYMBOL, "100.00", "100.20"))
    sink = beats if beats is not None else []
    ctx = StrategyContext(
        name="quote",
        account=account,
        options=OPTIONS if options is None else options,
        gateway=gateway,
        prices=prices,
        symbol_info=info or (lambda symbol: symbol_info(symbol) if symbol == SYMBOL else None),
        heartbeat_fn=lambda: sink.append(trio.current_time()),
        heartbeat_interval_s=2.0,
    )
    return QuoteStrategy(ctx), gateway, prices


async def run_for(strategy: QuoteStrategy, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await strategy.run()


def requests(gateway: RecordingGateway) -> list[tuple[float, str, str, str]]:
    return [(t, r["side"], r["price"], r["quantity"]) for t, r in gateway.requests]


async def test_places_alternating_tick_rounded_orders_and_cancels_the_oldest(
    autojump_clock: trio.abc.Clock,
) -> None:
    strategy, gateway, _ = make()
    foreign = gateway.add_foreign("manual-1", account=ACCOUNT, symbol=SYMBOL)
    other = gateway.add_foreign("other:abc:1", account=ACCOUNT, symbol=SYMBOL)
    await run_for(strategy, 7.0)

    assert requests(gateway) == [
        (0.0, "BUY", "99.99", "0.001"),
        (2.0, "SELL", "100.21", "0.001"),
        (4.0, "BUY", "99.99", "0.001"),
        (6.0, "SELL", "100.21", "0.001"),
    ]
    for _, request in gateway.requests:
        assert request["type"] == "LIMIT"
        assert request["time_in_force"] == "GTC"
        assert request["account"] == ACCOUNT
        assert strategy.ctx.owns(request["message_id"])
    assert len({r["message_id"] for _, r in gateway.requests}) == 4

    own = [r for r in gateway.placed() if strategy.ctx.owns(r.message_id)]
    assert len(own) == 4
    # At 4.0 two were open: the oldest was cancelled to make room; at 6.0 the next one.
    assert gateway.cancels == [own[0].client_order_id, own[1].client_order_id]
    assert foreign.client_order_id not in gateway.cancels
    assert other.client_order_id not in gateway.cancels
    live = [
        r
        for r in await gateway.open_orders(ACCOUNT)
        if strategy.ctx.owns(r.message_id) and r.cancel_requested_at_ms is None
    ]
    assert len(live) == 2


async def test_a_restarted_incarnation_manages_the_previous_orders(
    autojump_clock: trio.abc.Clock,
) -> None:
    first, gateway, prices = make()
    await run_for(first, 3.0)  # places at 0 and 2
    gateway.confirm_cancels()
    second, _, _ = make(gateway=gateway, prices=prices)
    assert second.ctx.run_id != first.ctx.run_id
    await run_for(second, 1.0)
    old = gateway.placed()
    # Two open from the first incarnation: the oldest goes before the new one is placed.
    assert gateway.cancels == [old[0].client_order_id]
    assert len(old) == 3


async def test_refusals_are_logged_and_the_loop_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    strategy, gateway, _ = make()
    gateway.refusals.extend(
        [
            RiskRejectedError([RiskReason("MAX_OPEN_ORDERS", "too many open orders")]),
            EntrySaturatedError("full", retry_after_s=0.5),
            EntryUnavailableError("pipeline down"),
            IntentValidationError([IntentProblem(ProblemCode.BAD_SYMBOL, "symbol", "nope")]),
        ]
    )
    with caplog.at_level(logging.INFO, logger="tradingd.strategy.quote"):
        await run_for(strategy, 11.0)
    assert [side for _, side, _, _ in requests(gateway)] == ["BUY", "SELL"] * 3
    assert len(gateway.placed()) == 2  # the fifth and sixth attempts went through
    text = caplog.text
    assert "refused by risk: MAX_OPEN_ORDERS" in text
    assert "entry saturated (retry after 0.5s)" in text
    assert "entry unavailable: pipeline down" in text
    assert "BAD_SYMBOL" in text
    assert text.count("placed ") == 2


async def test_does_not_place_blind_when_open_orders_are_unavailable(
    autojump_clock: trio.abc.Clock,
) -> None:
    strategy, gateway, _ = make()
    gateway.open_orders_error = EntryUnavailableError("store down")
    await run_for(strategy, 5.0)
    assert gateway.requests == []
    gateway.open_orders_error = None
    await run_for(strategy, 1.0)
    assert len(gateway.requests) == 1


async def test_waits_for_an_in_sync_book_while_heartbeating(
    autojump_clock: trio.abc.Clock,
) -> None:
    beats: list[float] = []
    prices = StaticPrices(book_view(SYMBOL, "100.00", "100.20", in_sync=False))
    strategy, gateway, _ = make(prices=prices, beats=beats)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_for, strategy, 6.0)
        await trio.sleep(4.5)
        assert gateway.requests == []
        prices.set(book_view(SYMBOL, "200.00", "200.20"))
    assert [t for t, _, _, _ in requests(gateway)] == [4.5]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) <= 1.0  # every beat_every_s (half the 2 s interval) at least


async def test_without_symbol_rules_prices_follow_the_book_precision(
    autojump_clock: trio.abc.Clock,
) -> None:
    strategy, gateway, _ = make(info=lambda symbol: None)
    await run_for(strategy, 3.0)
    assert requests(gateway) == [(0.0, "BUY", "99.99", "0.0015"), (2.0, "SELL", "100.21", "0.0015")]


async def test_a_quantity_rounding_to_zero_is_not_placed(autojump_clock: trio.abc.Clock) -> None:
    strategy, gateway, _ = make(options={**OPTIONS, "quantity": "0.0004"})
    await run_for(strategy, 1.0)
    assert gateway.requests == []


# --------------------------------------------------------------------------- options


def test_options_defaults_and_account_fallback() -> None:
    options, problems = QuoteOptions.parse({"symbol": SYMBOL, "quantity": "0.01"}, account="main")
    assert problems == []
    assert options == QuoteOptions(
        symbol=SYMBOL,
        account="main",
        quantity=Decimal("0.01"),
        offset_bps=Decimal(10),
        interval_s=2.0,
        max_orders=2,
    )
    options, _ = QuoteOptions.parse(
        {"symbol": SYMBOL, "quantity": "1", "account": "other", "offset_bps": "2.5"}, account="main"
    )
    assert options is not None
    assert (options.account, options.offset_bps) == ("other", Decimal("2.5"))


def test_option_problems_are_all_listed() -> None:
    bad = {
        "symbol": "btcusdt",
        "quantity": 0.001,
        "offset_bps": 0,
        "interval_s": -1,
        "max_orders": True,
        "colour": "red",
    }
    expected = [
        "unknown option 'colour' (known: symbol, account, quantity, offset_bps, interval_s, "
        "max_orders)",
        "symbol: must be an upper-case venue symbol like \"BTCUSDT\", got 'btcusdt'",
        "account: required: set options.account or the strategy's account",
        'quantity: must be a decimal string like "0.001", got 0.001',
        "offset_bps: must be > 0 and < 10000, got 0",
        "interval_s: must be a number of seconds > 0, got -1",
        "max_orders: must be an integer >= 1, got True",
    ]
    assert QuoteStrategy.validate_options(bad, account=None) == expected
    with pytest.raises(StrategyOptionsError) as info:
        make(options=bad, account=None)
    assert info.value.problems == tuple(f"strategies.quote.options: {p}" for p in expected)


def test_required_options() -> None:
    assert QuoteStrategy.validate_options({}, account="main") == [
        'symbol: required, a venue symbol like "BTCUSDT"',
        'quantity: required, a decimal string like "0.001"',
    ]
