"""Tests of daemon.strategies.base: the context (message ids, heartbeat) and MarketDataPrices."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio_util import AsyncValue

from daemon.marketdata.book import BookView, LocalBook
from daemon.orders.intent import MESSAGE_ID_PATTERN
from daemon.strategies.base import (
    MESSAGE_ID_MAX_CHARS,
    MarketDataPrices,
    PriceSource,
    StrategyContext,
)
from tests.helpers.strategy_fakes import RecordingGateway, StaticPrices, book_view


def make_ctx(name: str = "quote", **fields: Any) -> StrategyContext:
    values: dict[str, Any] = {
        "name": name,
        "account": "main",
        "gateway": RecordingGateway(),
        "prices": StaticPrices(),
        "symbol_info": lambda symbol: None,
    }
    values.update(fields)
    return StrategyContext(**values)


# --------------------------------------------------------------------------- the context


def test_context_basics() -> None:
    beats: list[int] = []
    ctx = make_ctx(account="", options={"a": 1}, heartbeat_fn=lambda: beats.append(1))
    assert ctx.account is None
    assert ctx.log is logging.getLogger("tradingd.strategy.quote")
    with pytest.raises(TypeError):
        ctx.options["a"] = 2  # type: ignore[index]
    ctx.heartbeat()
    ctx.heartbeat()
    assert beats == [1, 1]
    assert isinstance(StaticPrices(), PriceSource)
    with pytest.raises(ValueError, match="strategy name"):
        make_ctx(name="bad name")


def test_fresh_message_ids_are_unique_and_owned() -> None:
    ctx = make_ctx()
    ids = [ctx.message_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(MESSAGE_ID_PATTERN.match(mid) for mid in ids)
    assert all(ctx.owns(mid) for mid in ids)
    # Another incarnation (a restart, or the daemon's next life) starts at 1 again,
    # but its random run id keeps the ids apart.
    again = make_ctx()
    assert again.run_id != ctx.run_id
    assert not set(ids) & {again.message_id() for _ in range(100)}
    assert not make_ctx(name="quote2").owns(ids[0])


def test_stable_message_ids_are_deterministic() -> None:
    first, second = make_ctx(), make_ctx()
    assert first.message_id("grid", 3, 17) == "quote:grid:3:17"
    assert second.message_id("grid", 3, 17) == "quote:grid:3:17"
    assert first.message_id("grid", 3) != first.message_id("grid", 31)


@pytest.mark.parametrize("part", ["", "a b", "a:b", "é", "tab\t"])
def test_invalid_message_id_parts_are_refused(part: str) -> None:
    with pytest.raises(ValueError, match="message id part"):
        make_ctx().message_id("ok", part)


_PART = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
    max_size=40,
)


@given(
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z"),
    parts=st.lists(_PART, min_size=1, max_size=5),
    other=st.lists(_PART, min_size=1, max_size=5),
)
def test_stable_message_ids_are_valid_owned_and_distinct(
    name: str, parts: list[str], other: list[str]
) -> None:
    ctx = make_ctx(name=name)
    mid = ctx.message_id(*parts)
    assert MESSAGE_ID_PATTERN.match(mid)
    assert len(mid) <= MESSAGE_ID_MAX_CHARS
    assert ctx.owns(mid)
    assert make_ctx(name=name).message_id(*parts) == mid
    if other != parts:
        assert ctx.message_id(*other) != mid
    assert MESSAGE_ID_PATTERN.match(ctx.message_id())


async def test_sleep_heartbeats_at_half_the_interval(autojump_clock: trio.abc.Clock) -> None:
    beats: list[float] = []
    ctx = make_ctx(heartbeat_fn=lambda: beats.append(trio.current_time()), heartbeat_interval_s=2.0)
    await ctx.sleep(5.0)
    assert trio.current_time() == 5.0
    assert beats == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


# --------------------------------------------------------------------------- MarketDataPrices


def _in_sync(view: BookView) -> bool:
    return view.in_sync


async def test_market_data_prices_read_the_current_mapping(
    autojump_clock: trio.abc.Clock,
) -> None:
    books: dict[str, Any] | None = None
    prices = MarketDataPrices(lambda: books)
    assert prices.book("BTCUSDT") is None
    books = {"BTCUSDT": AsyncValue(book_view("BTCUSDT", "1", "2"))}
    view = prices.book("BTCUSDT")
    assert view is not None and view.mid == 1.5
    assert prices.book("ETHUSDT") is None
    # A LocalBook is accepted too (its ``latest`` is read).
    local = LocalBook("sim", "ETHUSDT")
    books = {"ETHUSDT": local}
    assert prices.book("ETHUSDT") == BookView("sim", "ETHUSDT")
    assert await prices.wait_book("ETHUSDT", lambda v: not v.in_sync) == BookView("sim", "ETHUSDT")


async def test_wait_book_waits_for_market_data_and_the_predicate(
    autojump_clock: trio.abc.Clock,
) -> None:
    books: dict[str, Any] | None = None
    prices = MarketDataPrices(lambda: books, recheck_s=1.0)
    got: list[tuple[float, BookView]] = []

    async def waiter() -> None:
        view = await prices.wait_book("BTCUSDT", _in_sync)
        got.append((trio.current_time(), view))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(2.5)  # market data not running
        value = AsyncValue(book_view("BTCUSDT", "1", "2", in_sync=False))
        books = {"BTCUSDT": value}
        await trio.sleep(2.5)  # running, but not in sync
        assert got == []
        synced = book_view("BTCUSDT", "1", "2")
        value.value = synced  # wakes the waiter at once
    assert got == [(5.0, synced)]


async def test_wait_book_copes_with_replaced_values(autojump_clock: trio.abc.Clock) -> None:
    old = AsyncValue(book_view("BTCUSDT", "1", "2", in_sync=False))
    books: dict[str, Any] = {"BTCUSDT": old}
    prices = MarketDataPrices(lambda: books, recheck_s=1.0)
    got: list[float] = []

    async def waiter() -> None:
        await prices.wait_book("BTCUSDT", _in_sync)
        got.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.25)
        # Market data restarted: a new value; the old one is never updated again.
        books = {"BTCUSDT": AsyncValue(book_view("BTCUSDT", "1", "2"))}
    # Noticed at the next re-fetch, not never.
    assert got == [1.0]


def test_recheck_must_be_positive() -> None:
    with pytest.raises(ValueError, match="recheck_s"):
        MarketDataPrices(lambda: None, recheck_s=0)
