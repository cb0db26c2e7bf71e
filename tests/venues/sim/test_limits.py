"""Request weight and order count: fixed windows, headers, 429, Retry-After, 418 bans."""

from __future__ import annotations

import pytest
import trio

from daemon.venues.sim.config import LimitsConfig, RateLimitConfig
from daemon.venues.sim.limits import RateLimiter
from daemon.venues.sim.protocol import ApiError
from tests.helpers.sim_api import (
    LIMIT_BUY,
    OTHER_KEY,
    OTHER_SECRET,
    TIMEOUT_S,
    ManualClock,
    api_for,
    make_config,
    running_sim_server,
)

MINUTE_MS = 60_000
T0 = 1_700_000_080_000  # 40 s into a minute
assert T0 % MINUTE_MS == 40_000


def _limiter(**limits: int) -> RateLimiter:
    specs = [
        RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, limits.get("weight", 10)),
        RateLimitConfig("RAW_REQUESTS", "MINUTE", 5, limits.get("raw", 1000)),
        RateLimitConfig("ORDERS", "SECOND", 10, limits.get("orders", 2)),
        RateLimitConfig("ORDERS", "DAY", 1, limits.get("orders_day", 1000)),
    ]
    return RateLimiter(specs, LimitsConfig(ban_after_violations=2, ban_s=60, ban_max_s=150))


def _raises(fn: object, *args: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


def test_weight_window_headers_and_retry_after() -> None:
    limiter = _limiter(weight=10)
    assert limiter.admit("a", 4, T0) == (("X-MBX-USED-WEIGHT-1M", "4"),)
    assert limiter.admit("a", 4, T0 + 1) == (("X-MBX-USED-WEIGHT-1M", "8"),)
    assert limiter.admit("b", 10, T0) == (("X-MBX-USED-WEIGHT-1M", "10"),)  # per IP
    over = _raises(limiter.admit, "a", 4, T0 + 2)
    assert (over.status, over.code) == (429, -1003)
    assert "current limit is 10 request weight per 1 MINUTE" in over.msg
    headers = dict(over.headers)
    window_end = (T0 // MINUTE_MS + 1) * MINUTE_MS
    assert headers["Retry-After"] == str(-(-(window_end - T0 - 2) // 1000))  # ceil: 20
    assert headers["X-MBX-USED-WEIGHT-1M"] == "8"  # the refused request added nothing
    # The next window starts from zero.
    assert limiter.admit("a", 4, window_end) == (("X-MBX-USED-WEIGHT-1M", "4"),)


def test_violations_lead_to_escalating_bans() -> None:
    limiter = _limiter(weight=1)
    limiter.admit("a", 1, T0)
    first = _raises(limiter.admit, "a", 1, T0)
    assert first.status == 429
    assert _raises(limiter.admit, "a", 1, T0 + 100).status == 429  # violation 1
    ban = _raises(limiter.admit, "a", 1, T0 + 200)  # violation 2: banned
    assert (ban.status, ban.code) == (418, -1003)
    assert dict(ban.headers)["Retry-After"] == "60"
    assert f"IP banned until {T0 + 200 + 60_000}" in ban.msg
    assert _raises(limiter.admit, "a", 1, T0 + 30_000).status == 418
    after = T0 + 200 + 60_000
    limiter.admit("a", 1, after)  # a new minute, the ban is over
    _raises(limiter.admit, "a", 1, after)
    _raises(limiter.admit, "a", 1, after + 1)
    second_ban = _raises(limiter.admit, "a", 1, after + 2)
    assert dict(second_ban.headers)["Retry-After"] == "120"  # doubled
    later = after + 2 + 120_000
    limiter.admit("a", 1, later)
    _raises(limiter.admit, "a", 1, later)
    _raises(limiter.admit, "a", 1, later)
    third_ban = _raises(limiter.admit, "a", 1, later)
    assert dict(third_ban.headers)["Retry-After"] == "150"  # capped at ban_max_s


def test_raw_requests_limit() -> None:
    limiter = _limiter(weight=1000, raw=2)
    limiter.admit("a", 1, T0)
    limiter.admit("a", 1, T0)
    over = _raises(limiter.admit, "a", 1, T0)
    assert over.status == 429 and "2 requests per 5 MINUTE" in over.msg


def test_order_count_per_account() -> None:
    limiter = _limiter(orders=2)
    assert limiter.count_order("k", T0) == (
        ("X-MBX-ORDER-COUNT-10S", "1"),
        ("X-MBX-ORDER-COUNT-1D", "1"),
    )
    limiter.count_order("k", T0 + 1)
    limiter.count_order("other", T0 + 1)
    over = _raises(limiter.count_order, "k", T0 + 2)
    assert (over.status, over.code) == (429, -1015)
    assert over.msg == "Too many new orders; current limit is 2 orders per 10 SECOND."
    assert "Retry-After" not in dict(over.headers)  # as documented for order limits
    window_end = (T0 // 10_000 + 1) * 10_000
    assert limiter.count_order("k", window_end) == (
        ("X-MBX-ORDER-COUNT-10S", "1"),
        ("X-MBX-ORDER-COUNT-1D", "3"),
    )


async def test_weight_429_and_418_over_http() -> None:
    clock = ManualClock(T0)
    config = make_config(
        rate_limits=(
            RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 30),
            RateLimitConfig("ORDERS", "SECOND", 10, 2),
        ),
        limits=LimitsConfig(ban_after_violations=3, ban_s=120),
    )
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(config, wall_clock=clock) as sim,
            api_for(sim, clock=clock) as api,
        ):
            info = await api.get("/api/v3/exchangeInfo")
            assert info.headers["X-MBX-USED-WEIGHT-1M"] == "20"
            depth = await api.get("/api/v3/depth", symbol="BTCUSDT", limit=5)
            assert depth.headers["X-MBX-USED-WEIGHT-1M"] == "25"
            over = await api.get("/api/v3/exchangeInfo")
            assert over.status_code == 429
            assert over.json()["code"] == -1003
            assert over.headers["Retry-After"] == "20"
            assert over.headers["X-MBX-USED-WEIGHT-1M"] == "25"
            statuses = [(await api.get("/api/v3/ping")).status_code for _ in range(3)]
            assert statuses == [429, 429, 418]
            banned = await api.get("/api/v3/ping")
            assert (banned.status_code, banned.headers["Retry-After"]) == (418, "120")
            clock.advance(120)
            ok = await api.get("/api/v3/ping")
            assert (ok.status_code, ok.headers["X-MBX-USED-WEIGHT-1M"]) == (200, "1")
            # Order count: 2 per 10 s per account.
            await api.control("POST", "/sim/market/clear", {"symbol": "BTCUSDT"})
            counts = []
            for _ in range(2):
                r = await api.order(**LIMIT_BUY)
                counts.append(r.headers["X-MBX-ORDER-COUNT-10S"])
            assert counts == ["1", "2"]
            third = await api.order(**LIMIT_BUY)
            assert (third.status_code, third.json()["code"]) == (429, -1015)
            assert "Retry-After" not in third.headers
            other = await api.order(**LIMIT_BUY, key=OTHER_KEY, secret=OTHER_SECRET)
            assert other.status_code == 200  # order limits are per account
            clock.advance(10)
            assert (await api.order(**LIMIT_BUY)).status_code == 200
