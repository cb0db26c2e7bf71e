"""HttpClassifier and Retry-After parsing, with real httpx2 objects (no network)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import AmbiguousOutcomeError, PermanentError, RetryExhaustedError, TransientError
from daemon.resilience import (
    HttpClassifier,
    Jitter,
    Outcome,
    RetryPolicy,
    TokenBucket,
    Verdict,
    is_idempotent,
    parse_retry_after,
    retry_after_s,
)
from tests.helpers.fuzzing import fuzz_settings, hostile_text

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
classify = HttpClassifier(now=lambda: NOW)


def response(
    status: int, method: str = "GET", headers: dict[str, str] | None = None
) -> httpx2.Response:
    return httpx2.Response(
        status, headers=headers, request=httpx2.Request(method, "https://api.venue/v3/order")
    )


def error(kind: type[httpx2.HTTPError], method: str = "GET") -> httpx2.HTTPError:
    return kind("boom", request=httpx2.Request(method, "https://api.venue/v3/order"))  # type: ignore[call-arg]


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
        ("Wed, 01 May 2024 11:59:00 GMT", 0.0),  # in the past
        ("Wed, 01 May 2024 12:02:00 -0000", 120.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits: float() would take them
        ("1_000", None),
        ("9" * 65, None),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@fuzz_settings()
@given(st.one_of(hostile_text, st.text(max_size=80), st.datetimes().map(str)))
def test_parse_retry_after_never_raises(value: str) -> None:
    """A header from outside: a number of seconds, or None, never an exception."""
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is None or (seconds >= 0 and seconds != float("inf"))


def test_parse_retry_after_with_naive_now() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 01 May 2024 12:00:10 GMT", now=naive) == 10.0


def test_retry_after_of_a_response_uses_the_injected_clock() -> None:
    r = response(429, headers={"Retry-After": "Wed, 01 May 2024 12:01:00 GMT"})
    assert retry_after_s(r, now=lambda: NOW) == 60.0
    assert retry_after_s(response(429)) is None


def test_idempotent_methods() -> None:
    for method in ("GET", "head", "OPTIONS", "PUT", "DELETE"):
        assert is_idempotent(method)
    for method in ("POST", "PATCH", "CONNECT"):
        assert not is_idempotent(method)


# ---------------------------------------------------------------- responses


@pytest.mark.parametrize(
    ("status", "method", "headers", "verdict", "delay"),
    [
        (200, "GET", None, Verdict.ACCEPT, None),
        (201, "POST", None, Verdict.ACCEPT, None),
        (304, "GET", None, Verdict.ACCEPT, None),
        (502, "GET", None, Verdict.RETRY, None),
        (503, "GET", None, Verdict.RETRY, None),
        (504, "DELETE", None, Verdict.RETRY, None),
        (503, "GET", {"Retry-After": "7"}, Verdict.RETRY_AFTER, 7.0),
        (500, "GET", None, Verdict.GIVE_UP, None),
        (501, "PUT", None, Verdict.GIVE_UP, None),
        (502, "POST", None, Verdict.AMBIGUOUS, None),
        (503, "POST", {"Retry-After": "1"}, Verdict.AMBIGUOUS, None),
        (500, "POST", None, Verdict.AMBIGUOUS, None),
        (500, "PATCH", None, Verdict.AMBIGUOUS, None),
        (429, "GET", {"Retry-After": "2"}, Verdict.RETRY_AFTER, 2.0),
        (429, "POST", {"Retry-After": "2"}, Verdict.RETRY_AFTER, 2.0),  # refused: safe
        (429, "POST", None, Verdict.RETRY, None),
        (
            418,
            "GET",
            {"Retry-After": "Wed, 01 May 2024 12:05:00 GMT"},
            Verdict.RETRY_AFTER,
            300.0,
        ),
        (418, "GET", None, Verdict.GIVE_UP, None),
        (400, "GET", None, Verdict.GIVE_UP, None),
        (401, "POST", None, Verdict.GIVE_UP, None),
        (404, "GET", None, Verdict.GIVE_UP, None),
        (409, "PUT", None, Verdict.GIVE_UP, None),
    ],
)
def test_response_classification(
    status: int,
    method: str,
    headers: dict[str, str] | None,
    verdict: Verdict,
    delay: float | None,
) -> None:
    decision = classify(Outcome.success(response(status, method, headers)))
    assert decision.verdict is verdict
    assert decision.delay_s == delay
    assert decision.reason.startswith(f"http_{status}")


def test_status_error_is_judged_by_its_response() -> None:
    r = response(503, "GET")
    exc = httpx2.HTTPStatusError("503", request=r.request, response=r)
    assert classify(Outcome.failure(exc)).verdict is Verdict.RETRY


def test_idempotency_can_be_forced() -> None:
    assert HttpClassifier(idempotent=True)(Outcome.success(response(503, "POST"))).verdict is (
        Verdict.RETRY
    )
    assert HttpClassifier(idempotent=False)(Outcome.success(response(503, "GET"))).verdict is (
        Verdict.AMBIGUOUS
    )


def test_response_without_request_counts_as_non_idempotent() -> None:
    assert classify(Outcome.success(httpx2.Response(503))).verdict is Verdict.AMBIGUOUS


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "method", "verdict"),
    [
        (httpx2.ConnectError, "POST", Verdict.RETRY),  # never left
        (httpx2.ConnectTimeout, "POST", Verdict.RETRY),
        (httpx2.PoolTimeout, "POST", Verdict.RETRY),
        (httpx2.ReadTimeout, "GET", Verdict.RETRY),
        (httpx2.ReadTimeout, "POST", Verdict.AMBIGUOUS),
        (httpx2.WriteTimeout, "PUT", Verdict.RETRY),
        (httpx2.WriteTimeout, "POST", Verdict.AMBIGUOUS),
        (httpx2.RemoteProtocolError, "GET", Verdict.RETRY),
        (httpx2.RemoteProtocolError, "POST", Verdict.AMBIGUOUS),
        (httpx2.ReadError, "POST", Verdict.AMBIGUOUS),
        (httpx2.WriteError, "POST", Verdict.AMBIGUOUS),
        (httpx2.DecodingError, "GET", Verdict.GIVE_UP),
        (httpx2.DecodingError, "POST", Verdict.AMBIGUOUS),  # the order may exist
        (httpx2.LocalProtocolError, "GET", Verdict.GIVE_UP),
        (httpx2.UnsupportedProtocol, "GET", Verdict.GIVE_UP),
        (httpx2.TooManyRedirects, "GET", Verdict.GIVE_UP),
    ],
)
def test_error_classification(kind: type[httpx2.HTTPError], method: str, verdict: Verdict) -> None:
    assert classify(Outcome.failure(error(kind, method))).verdict is verdict


def test_errors_without_a_request_and_trio_timeouts_are_not_assumed_idempotent() -> None:
    assert classify(Outcome.failure(httpx2.ReadTimeout("x"))).verdict is Verdict.AMBIGUOUS
    assert classify(Outcome.failure(httpx2.ConnectError("x"))).verdict is Verdict.RETRY
    assert classify(Outcome.failure(trio.TooSlowError())).verdict is Verdict.AMBIGUOUS
    forced = HttpClassifier(idempotent=True)
    assert forced(Outcome.failure(trio.TooSlowError())).verdict is Verdict.RETRY


def test_other_outcomes_go_to_the_fallback() -> None:
    assert classify(Outcome.failure(TransientError("db busy"))).verdict is Verdict.RETRY
    assert classify(Outcome.failure(PermanentError("bad"))).verdict is Verdict.GIVE_UP
    assert classify(Outcome.success({"not": "a response"})).verdict is Verdict.ACCEPT
    assert classify(Outcome.failure(httpx2.InvalidURL("x"))).verdict is Verdict.GIVE_UP


# ---------------------------------------------------------------- with a policy


def client(handler: Callable[[httpx2.Request], httpx2.Response]) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler), base_url="https://venue")


def policy(**kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", Jitter.NONE)
    kwargs.setdefault("base_delay_s", 1.0)
    return RetryPolicy(name="venue.rest", classifier=classify, **kwargs)


async def test_get_is_retried_through_gateway_errors(autojump_clock: Any) -> None:
    statuses = iter([502, 503, 200])
    seen: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(trio.current_time())
        return httpx2.Response(next(statuses))

    async with client(handler) as http:
        r = await policy().call(http.get, "/api/v3/depth")
    assert r.status_code == 200
    assert seen == [0.0, 1.0, 3.0]


async def test_post_with_503_is_ambiguous_and_sent_once(autojump_clock: Any) -> None:
    sent: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.method)
        return httpx2.Response(503)

    async with client(handler) as http:
        with pytest.raises(AmbiguousOutcomeError, match="http_503"):
            await policy().call(http.post, "/api/v3/order")
    assert sent == ["POST"]


async def test_post_read_timeout_is_ambiguous_connect_error_is_retried(autojump_clock: Any) -> None:
    attempts: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(request.method)
        if len(attempts) == 1:
            raise httpx2.ConnectError("refused", request=request)
        raise httpx2.ReadTimeout("no answer", request=request)

    async with client(handler) as http:
        with pytest.raises(AmbiguousOutcomeError) as info:
            await policy().call(http.post, "/api/v3/order")
    assert attempts == ["POST", "POST"]
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)


async def test_429_waits_for_retry_after_not_the_backoff(autojump_clock: Any) -> None:
    seen: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(trio.current_time())
        if len(seen) == 1:
            return httpx2.Response(429, headers={"Retry-After": "4"})
        return httpx2.Response(200)

    async with client(handler) as http:
        r = await policy().call(http.get, "/api/v3/ticker")
    assert r.status_code == 200
    assert seen == [0.0, 4.0]


async def test_long_retry_after_gives_up_and_freezes_the_limiter(autojump_clock: Any) -> None:
    calls = 0

    def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return httpx2.Response(418, headers={"Retry-After": "120"})

    limiter = TokenBucket(rate_per_s=10.0, capacity=10.0)
    async with client(handler) as http:
        with pytest.raises(RetryExhaustedError) as info:
            await policy(max_elapsed_s=30.0).call(http.get, "/api/v3/ticker")
    assert calls == 1
    assert info.value.reason == "retry_after_exceeds_budget"
    assert info.value.retry_after_s == 120.0
    assert isinstance(info.value.last_result, httpx2.Response)
    limiter.freeze_for(info.value.retry_after_s)
    await limiter.acquire()
    assert trio.current_time() == 120.1


async def test_4xx_is_handed_back_for_the_caller_to_read(autojump_clock: Any) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(400, json={"code": -1121, "msg": "Invalid symbol."})

    async with client(handler) as http:
        r = await policy().call(http.get, "/api/v3/depth")
    assert r.status_code == 400
    assert r.json()["code"] == -1121
