"""The local rate limiter's admission: how long a request may wait before it fails unsent.

A new order waits at most ``order_limiter_max_wait_s`` (shorter than the
executor's send timeout), so a saturated window makes it fail *unsent*
(``http_status is None``: back to PENDING), never run into the send timeout
while still queued here (which would be UNKNOWN). Other requests keep the
longer ``limiter_max_wait_s``.
"""

from __future__ import annotations

import pytest
import trio

from daemon.errors import VenueRateLimitedError
from daemon.model.instruments import RateLimitInterval, RateLimitRule, RateLimitType
from daemon.venues.binance.admission import VenueLimits

RULES = (
    RateLimitRule(RateLimitType.REQUEST_WEIGHT, RateLimitInterval.SECOND, 10, 10),
    RateLimitRule(RateLimitType.ORDERS, RateLimitInterval.SECOND, 10, 1),
)


def limits() -> VenueLimits:
    return VenueLimits("v", max_wait_s=30.0, order_max_wait_s=1.0, rules=RULES)


async def test_a_new_order_fails_unsent_after_the_order_wait(autojump_clock: object) -> None:
    admission = limits()
    await admission.acquire(1, 1, "POST /api/v3/order")  # the one order of this 10 s window
    started = trio.current_time()
    with pytest.raises(VenueRateLimitedError) as caught:
        await admission.acquire(1, 1, "POST /api/v3/order")
    assert trio.current_time() - started == pytest.approx(1.0)
    assert caught.value.http_status is None
    assert "not sent" in str(caught.value)


async def test_a_query_waits_the_longer_bound(autojump_clock: object) -> None:
    admission = limits()
    for _ in range(10):
        await admission.acquire(1, 0, "GET /api/v3/order")  # the whole weight of this 10 s window
    started = trio.current_time()
    await admission.acquire(1, 0, "GET /api/v3/order")  # admitted when the window frees
    waited = trio.current_time() - started
    assert 1.0 < waited <= 30.0


def test_the_order_wait_never_exceeds_the_general_one() -> None:
    admission = VenueLimits("v", max_wait_s=0.5, order_max_wait_s=2.0, rules=RULES)
    assert admission._order_max_wait_s == 0.5
