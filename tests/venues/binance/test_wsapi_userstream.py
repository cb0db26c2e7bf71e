"""UserDataStream against a real trio-websocket server on 127.0.0.1 (virtual time).

The server (:class:`tests.helpers.wsapi_fakes.FakeWsApi`) verifies the signed
``userDataStream.subscribe.signature`` and pushes events as each test
scripts; the stream's channel is read as the pipeline would read it.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from daemon.errors import ApiKeyRejectedError
from daemon.model.userstream import (
    AccountPosition,
    BalanceUpdate,
    ExecutionReport,
    ExecutionType,
    StreamTerminated,
    UserStreamDown,
    UserStreamEvent,
    UserStreamUp,
)
from daemon.resilience import Jitter, RetryPolicy
from daemon.venues.binance import UserDataStream
from tests.helpers.wsapi_fakes import (
    API_KEY,
    API_SECRET,
    LOCAL_MS,
    SERVER_AHEAD_MS,
    Answer,
    FakeConnection,
    FakeRest,
    FakeWsApi,
    error,
    ok,
    rest_client,
    serving,
    stall_proxy,
    wsapi_config,
)

from . import wsapi_payloads as W

LIMIT_S = 600.0
SEED = 11

Events = trio.MemoryReceiveChannel[UserStreamEvent]


def subscriptions(*ids: int) -> list[Answer]:
    return [ok({"subscriptionId": i}) for i in ids]


@asynccontextmanager
async def streaming(
    fake: FakeWsApi, rest: FakeRest | None = None, *, port: int | None = None, **config: Any
) -> AsyncIterator[tuple[UserDataStream, Events]]:
    """A UserDataStream on ``fake`` (already serving), started; yields it and its events."""
    client = rest_client(rest or FakeRest(), wsapi_config(port or fake.port, **config))
    stream = UserDataStream(client, rng=random.Random(SEED))
    send, receive = trio.open_memory_channel[UserStreamEvent](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(stream.run, send)
        yield stream, receive
        nursery.cancel_scope.cancel()
    await client.aclose()


async def take(events: Events, n: int) -> list[UserStreamEvent]:
    return [await events.receive() for _ in range(n)]


def backoff_delays(n: int, initial_s: float = 1.0, max_s: float = 8.0) -> list[float]:
    """The delays a stream seeded with SEED waits after 1, 2, … n failures in a row."""
    policy = RetryPolicy(
        base_delay_s=initial_s, max_delay_s=max_s, jitter=Jitter.EQUAL, rng=random.Random(SEED)
    )
    return [policy.next_delay_s(i) for i in range(1, n + 1)]


# =========================================================================== events


async def test_subscribe_then_forward_the_accounts_events_in_order(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", ok({"subscriptionId": 3}))
    with trio.fail_after(LIMIT_S):
        async with serving(fake), streaming(fake) as (stream, events):
            (up,) = await take(events, 1)
            assert stream.subscribed and stream.snapshot()["subscription_id"] == 3
            conn = fake.connections[0]
            await conn.event(W.EXECUTION_REPORT, 3)
            await conn.event(W.LIST_STATUS, 3)  # not used: dropped, counted
            await conn.event(W.trade_report(), 3)
            await conn.event(W.EXECUTION_REPORT, 99)  # another subscription's: dropped
            await conn.event(W.ACCOUNT_POSITION, 3)
            await conn.event(W.cancel_report(), 3)
            await conn.event(W.BALANCE_UPDATE, 3)
            await conn.event(W.EXTERNAL_LOCK, 3)
            new, trade, position, cancel, balance = await take(events, 5)
            snapshot = stream.snapshot()
    assert up == UserStreamUp(venue="binance", since_ms=LOCAL_MS, subscription_id=3)
    assert isinstance(new, ExecutionReport) and new.execution_type is ExecutionType.NEW
    assert isinstance(trade, ExecutionReport) and trade.fill is not None
    assert trade.fill.trade_id == 5501
    assert isinstance(position, AccountPosition)
    assert isinstance(cancel, ExecutionReport)
    assert cancel.report.client_order_id == W.EXECUTION_REPORT["c"]
    assert cancel.cancel_client_order_id == "cancel-1"
    assert isinstance(balance, BalanceUpdate)
    assert snapshot["events"] == 5 and snapshot["last_event_ms"] == LOCAL_MS
    assert snapshot["ignored"] == 3 and snapshot["connected"]
    (subscribe,) = fake.calls("userDataStream.subscribe.signature")
    assert subscribe["params"] == {
        "apiKey": API_KEY,
        "recvWindow": 5000,
        "timestamp": LOCAL_MS + SERVER_AHEAD_MS,
        "signature": subscribe["params"]["signature"],
    }
    assert fake.bad_signatures == 0 and fake.paths == ["/ws-api/v3"]


async def test_started_only_after_the_first_subscription(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route(
        "userDataStream.subscribe.signature",
        error(-1007, "Timeout waiting for response from backend server.", 503),
        ok({"subscriptionId": 0}),
    )
    with trio.fail_after(LIMIT_S):
        async with serving(fake):
            client = rest_client(FakeRest(), wsapi_config(fake.port))
            stream = UserDataStream(client, rng=random.Random(SEED))
            send, receive = trio.open_memory_channel[UserStreamEvent](10)
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                await nursery.start(stream.run, send)
                waited = trio.current_time() - start
                assert isinstance(await receive.receive(), UserStreamUp)
                nursery.cancel_scope.cancel()
    # The first subscription failed: a new connection after one backoff delay.
    assert waited == pytest.approx(backoff_delays(1)[0], abs=0.1)
    assert len(fake.connections) == 2
    assert stream.snapshot()["reconnects"] == 1
    await client.aclose()


async def test_a_terminated_stream_is_reported_and_resubscribed(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", *subscriptions(0, 1))
    with trio.fail_after(LIMIT_S):
        async with serving(fake), streaming(fake) as (stream, events):
            await take(events, 1)
            conn = fake.connections[0]
            await conn.event(W.TERMINATED, 0)
            terminated, down, up = await take(events, 3)
            await conn.event(W.EXECUTION_REPORT, 1)
            (after,) = await take(events, 1)
    assert isinstance(terminated, StreamTerminated)
    assert isinstance(down, UserStreamDown) and down.reason == "terminated"
    assert isinstance(up, UserStreamUp) and up.subscription_id == 1
    assert isinstance(after, ExecutionReport)
    # Subscribed again on the same connection, freshly signed.
    assert len(fake.connections) == 1
    first, second = fake.calls("userDataStream.subscribe.signature")
    assert first["id"] != second["id"]
    assert stream.snapshot()["downs"] == {"terminated": 1}


# =========================================================================== the connection


async def test_a_lost_connection_reconnects_with_backoff(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", ok({"subscriptionId": 0}))
    with trio.fail_after(LIMIT_S):
        async with serving(fake), streaming(fake) as (stream, events):
            await take(events, 1)
            await fake.connections[0].event(W.EXECUTION_REPORT)
            await fake.connections[0].close()
            report, down = await take(events, 2)
            dropped = trio.current_time()
            (up,) = await take(events, 1)
            waited = trio.current_time() - dropped
    assert isinstance(report, ExecutionReport)  # delivered before the Down
    assert isinstance(down, UserStreamDown) and down.reason == "closed"
    assert down.at_ms == LOCAL_MS
    assert isinstance(up, UserStreamUp)
    assert waited == pytest.approx(backoff_delays(1)[0], abs=0.1)
    assert len(fake.connections) == 2 and stream.snapshot()["reconnects"] == 1


async def test_server_shutdown_reconnects_at_once(loopback_clock: trio.testing.MockClock) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", ok({"subscriptionId": 0}))
    with trio.fail_after(LIMIT_S):
        async with serving(fake), streaming(fake) as (stream, events):
            await take(events, 1)
            await fake.connections[0].event({"e": "serverShutdown", "E": 5}, None)
            down, up = await take(events, 2)
            assert stream.snapshot()["downs"] == {"server_shutdown": 1}
    assert isinstance(down, UserStreamDown) and down.reason == "server_shutdown"
    assert isinstance(up, UserStreamUp)
    assert len(fake.connections) == 2


async def test_a_stalled_connection_is_found_by_ping(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", ok({"subscriptionId": 0}))
    with trio.fail_after(LIMIT_S):
        async with (
            serving(fake),
            stall_proxy(fake.port) as proxy,
            streaming(fake, port=proxy.port, ws_api_ping_interval_s=5.0) as (stream, events),
        ):
            await take(events, 1)
            proxy.frozen = True
            start = trio.current_time()
            (down,) = await take(events, 1)
            detected = trio.current_time() - start
            proxy.frozen = False
            (up,) = await take(events, 1)
    assert isinstance(down, UserStreamDown) and down.reason == "stalled"
    assert detected <= 5.0 + 5.0 + 0.1  # the next ping, then request_timeout_s
    assert isinstance(up, UserStreamUp)
    assert stream.stats.pong_timeouts == 1


async def test_max_connection_age_replaces_the_connection(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", *subscriptions(0, 0))
    with trio.fail_after(LIMIT_S):
        async with (
            serving(fake),
            streaming(fake, max_connection_age_s=100.0, ws_api_ping_interval_s=60.0) as (
                _,
                events,
            ),
        ):
            await take(events, 1)
            start = trio.current_time()
            down, up = await take(events, 2)
            assert trio.current_time() - start == pytest.approx(100.0, abs=0.1)
    assert isinstance(down, UserStreamDown) and down.reason == "max_age"
    assert isinstance(up, UserStreamUp)
    assert len(fake.connections) == 2


async def test_malformed_frames_are_counted_not_fatal(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", ok({"subscriptionId": 0}))
    with trio.fail_after(LIMIT_S):
        async with serving(fake), streaming(fake) as (stream, events):
            await take(events, 1)
            conn = fake.connections[0]
            for junk in (
                "{",
                b"\xff\xfe",
                json.dumps({"subscriptionId": 0, "event": {**W.EXECUTION_REPORT, "i": "1"}}),
                json.dumps({"subscriptionId": 0, "event": W.trade_report(t=2**70)}),
                "[" * 10_000,
            ):
                await conn.send(junk)
            await conn.event(W.BALANCE_UPDATE)
            (balance,) = await take(events, 1)
            snapshot = stream.snapshot()
    assert isinstance(balance, BalanceUpdate)
    assert snapshot["malformed"] == 5 and snapshot["subscribed"]
    assert len(fake.connections) == 1


async def test_a_refused_key_ends_the_stream_with_the_error(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", error(-2015, "Invalid API-key, IP, or perms"))
    with trio.fail_after(LIMIT_S):
        async with serving(fake):
            client = rest_client(FakeRest(), wsapi_config(fake.port))
            stream = UserDataStream(client)
            send, _ = trio.open_memory_channel[UserStreamEvent](10)
            with pytest.raises(ApiKeyRejectedError):
                await stream.run(send)
            await client.aclose()
    assert len(fake.calls("userDataStream.subscribe.signature")) == 1


async def test_a_closed_consumer_ends_the_stream_quietly(
    loopback_clock: trio.testing.MockClock,
) -> None:
    fake = FakeWsApi()
    fake.route("userDataStream.subscribe.signature", ok({"subscriptionId": 0}))
    with trio.fail_after(LIMIT_S):
        async with serving(fake):
            client = rest_client(FakeRest(), wsapi_config(fake.port))
            stream = UserDataStream(client)
            send, receive = trio.open_memory_channel[UserStreamEvent](0)  # unbuffered
            async with trio.open_nursery() as nursery:
                # Started before the Up is handed over: the starter reads the channel.
                await nursery.start(stream.run, send)
                assert isinstance(await receive.receive(), UserStreamUp)
                await receive.aclose()
                await fake.connections[0].event(W.BALANCE_UPDATE)
            await client.aclose()
    assert not stream.snapshot()["connected"]


async def test_secrets_never_reach_logs_or_status(
    loopback_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeWsApi()
    signatures: list[str] = []

    def echo(frame: dict[str, Any], conn: FakeConnection) -> Answer:
        params = frame["params"]
        signatures.append(params["signature"])
        if len(signatures) == 1:
            return error(-1000, f"unknown: {params['apiKey']} {params['signature']} {API_SECRET}")
        return ok({"subscriptionId": 0})

    fake.route("userDataStream.subscribe.signature", echo)
    with trio.fail_after(LIMIT_S):
        async with serving(fake), streaming(fake) as (stream, events):
            await take(events, 1)
            snapshot = json.dumps(stream.snapshot())
    assert len(signatures) == 2
    for text in (caplog.text, snapshot):
        for secret in (API_KEY, API_SECRET, *signatures):
            assert secret not in text
