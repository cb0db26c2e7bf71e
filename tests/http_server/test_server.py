"""Tests of the shared HTTP server and router (:mod:`daemon.http`), on 127.0.0.1 port 0.

Raw Trio sockets check the wire (keep-alive, pipelining, malformed input,
limits, timeouts); httpx2 checks that a real client is happy. httpx2's
``AsyncClient`` runs under Trio through anyio.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio

from daemon.config import parse_listen
from daemon.http import (
    HTTPError,
    Request,
    Response,
    Router,
    error_response,
    serve_http,
)
from daemon.http.server import DEFAULT_BUSY_MESSAGE, DEFAULT_NAME
from tests.helpers.raw_http import RawClient, raw_connection

TIMEOUT_S = 10  # outer bound for every I/O test; they take milliseconds


# --------------------------------------------------------------------------- helpers


def make_router() -> Router:
    router = Router()

    @router.route("GET", "/health")
    async def health(request: Request) -> Response:
        return Response.json({"ok": True, "client": list(request.client or ())})

    @router.route("GET", "/orders/{client_order_id}")
    async def get_order(request: Request) -> Response:
        return Response.json(
            {
                "id": request.path_params["client_order_id"],
                "query": {k: list(v) for k, v in request.query.items()},
                "method": request.method,
            }
        )

    @router.route("GET", "/orders/open")
    async def open_orders(request: Request) -> Response:
        return Response.json({"open": []})

    @router.route("POST", "/orders")
    async def post_order(request: Request) -> Response:
        payload = request.json()
        return Response.json({"received": payload}, status=202)

    @router.route("GET", "/crash")
    async def crash(request: Request) -> Response:
        raise RuntimeError("secret detail: api_key=hunter2")

    @router.route("GET", "/teapot")
    async def teapot(request: Request) -> Response:
        raise HTTPError(429, "slow down", headers=(("Retry-After", "3"),))

    @router.route("GET", "/hang")
    async def hang(request: Request) -> Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    @router.route("GET", "/bad-header")
    async def bad_header(request: Request) -> Response:
        return Response(200, b"x", (("X-Evil", "a\r\nInjected: yes"),))

    @router.route("GET", "/not-a-response")
    async def not_a_response(request: Request) -> Response:
        return "oops"  # type: ignore[return-value]

    @router.route("GET", "/text")
    async def text(request: Request) -> Response:
        return Response.text("héllo\n")

    @router.route("GET", "/empty")
    async def empty(request: Request) -> Response:
        return Response(204, b"ignored")

    return router


@asynccontextmanager
async def running(handler: Any = None, **kwargs: Any) -> AsyncIterator[tuple[str, int]]:
    """Run ``serve_http`` for the duration of the block; yields ``(host, port)``."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_http, handler or make_router(), "127.0.0.1", 0, **kwargs)
        )
        try:
            yield address
        finally:
            nursery.cancel_scope.cancel()


def get(path: str, *, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


# --------------------------------------------------------------------------- httpx2


async def test_httpx2_round_trip_and_standard_headers() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as (host, port):
            assert host == "127.0.0.1"
            assert port > 0
            async with httpx2.AsyncClient(base_url=f"http://{host}:{port}") as client:
                r = await client.get("/health")
                assert r.status_code == 200
                assert r.headers["content-type"] == "application/json"
                assert r.headers["server"] == "tradingd"
                assert r.headers["date"].endswith(" GMT")
                assert int(r.headers["content-length"]) == len(r.content)
                first_client = r.json()["client"]

                r = await client.get(
                    "/orders/abc%2Fd%20e", params=[("x", "1"), ("x", "2"), ("y", "")]
                )
                assert r.status_code == 200
                assert r.json() == {
                    "id": "abc/d e",
                    "query": {"x": ["1", "2"], "y": [""]},
                    "method": "GET",
                }
                # keep-alive: the second request came over the same connection
                r = await client.get("/health")
                assert r.json()["client"] == first_client

                r = await client.post("/orders", json={"qty": "1.5"})
                assert r.status_code == 202
                assert r.json() == {"received": {"qty": "1.5"}}

                r = await client.get("/text")
                assert r.headers["content-type"] == "text/plain; charset=utf-8"
                assert r.text == "héllo\n"


async def test_httpx2_sees_404_405_and_handler_errors() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running() as (host, port),
            httpx2.AsyncClient(base_url=f"http://{host}:{port}") as client,
        ):
            r = await client.get("/nope")
            assert (r.status_code, r.json()) == (404, {"error": "not found"})
            r = await client.delete("/health")
            assert r.status_code == 405
            assert r.headers["allow"] == "GET, HEAD"
            r = await client.get("/orders")
            assert r.status_code == 405
            assert r.headers["allow"] == "POST"
            r = await client.get("/teapot")
            assert (r.status_code, r.json()) == (429, {"error": "slow down"})
            assert r.headers["retry-after"] == "3"
            r = await client.post("/orders", content=b"{not json")
            assert r.status_code == 400
            assert r.json()["error"].startswith("request body is not valid JSON")
            r = await client.post("/orders", content=b'{"price": NaN}')
            assert r.status_code == 400


# --------------------------------------------------------------------------- keep-alive


async def test_two_requests_on_one_raw_connection() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(get("/health"))
            first = await c.read_response()
            await c.send(get("/orders/A1?z=9"))
            second = await c.read_response()
            assert first.status == 200
            assert first.json()["client"][1] == c.stream.socket.getsockname()[1]
            assert second.status == 200
            assert second.json()["id"] == "A1"
            assert "connection" not in second.headers


async def test_pipelined_requests_are_answered_in_order() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(get("/orders/1") + get("/nope") + get("/orders/3"))
            answers = [await c.read_response() for _ in range(3)]
            assert [a.status for a in answers] == [200, 404, 200]
            assert answers[0].json()["id"] == "1"
            assert answers[2].json()["id"] == "3"


async def test_connection_close_from_client_is_honoured() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(get("/health", extra="Connection: close\r\n"))
            r = await c.read_response()
            assert r.status == 200
            assert r.headers["connection"] == "close"
            assert await c.at_eof()


async def test_http_1_0_request_is_answered_and_closed() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(b"GET /health HTTP/1.0\r\n\r\n")
            r = await c.read_response()
            assert r.status == 200
            assert await c.at_eof()


# --------------------------------------------------------------------------- malformed and limits


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not http\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /health HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
async def test_malformed_request_gets_400_and_close(garbage: bytes) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address:
            async with raw_connection(address) as c:
                await c.send(garbage)
                r = await c.read_response()
                assert r.status == 400
                assert r.json()["error"].startswith("bad request")
                assert r.headers["connection"] == "close"
                assert await c.at_eof()
            # and the server is still fine
            async with raw_connection(address) as c:
                await c.send(get("/health"))
                assert (await c.read_response()).status == 200


async def test_declared_body_over_limit_gets_413_without_reading_it() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(max_body_bytes=100) as address, raw_connection(address) as c:
            await c.send(
                b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n"
                b"Content-Type: application/json\r\n\r\n"
            )
            r = await c.read_response()
            assert r.status == 413
            assert r.json() == {"error": "request body larger than 100 bytes"}
            assert r.headers["connection"] == "close"
            assert await c.at_eof()


async def test_refusing_a_head_request_sends_no_body(caplog: pytest.LogCaptureFixture) -> None:
    with (
        trio.fail_after(TIMEOUT_S),
        caplog.at_level(logging.WARNING, logger="tradingd.http"),
    ):
        async with running(max_body_bytes=10) as address, raw_connection(address) as c:
            await c.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
            r = await c.read_response(head=True)
            assert r.status == 413
            assert int(r.headers["content-length"]) > 0  # what a GET would have carried
            assert await c.at_eof()  # and no body bytes before the close
    assert not caplog.records


async def test_chunked_body_over_limit_gets_413() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(max_body_bytes=100) as address, raw_connection(address) as c:
            chunk = b"x" * 60
            await c.send(
                b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"3c\r\n"
                + chunk
                + b"\r\n"
                + b"3c\r\n"
                + chunk
                + b"\r\n0\r\n\r\n"
            )
            r = await c.read_response()
            assert r.status == 413
            assert await c.at_eof()


async def test_body_at_the_limit_is_accepted() -> None:
    body = json.dumps({"pad": "x" * 89}).encode()
    assert len(body) == 100
    with trio.fail_after(TIMEOUT_S):
        async with running(max_body_bytes=100) as address, raw_connection(address) as c:
            await c.send(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + body)
            r = await c.read_response()
            assert r.status == 202


async def test_expect_100_continue() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(
                b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await c.read_response(head=True)
            assert interim.status == 100
            await c.send(b"{}")
            r = await c.read_response()
            assert (r.status, r.json()) == (202, {"received": {}})


@pytest.mark.parametrize("one_write", [True, False])
async def test_headers_over_limit_get_431(one_write: bool) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(max_header_bytes=1024) as address, raw_connection(address) as c:
            big = b"X-Big: " + b"a" * 2000 + b"\r\n"
            if one_write:  # the whole head at once: h11 alone would accept it
                await c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
            else:  # an unfinished head that keeps growing
                await c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n" + big)
            r = await c.read_response()
            assert r.status == 431
            assert r.json() == {"error": "request header fields too large"}
            assert await c.at_eof()


# --------------------------------------------------------------------------- routing, HEAD


async def test_head_gets_get_headers_without_body() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(get("/health"))
            full = await c.read_response()
            await c.send(get("/health", method="HEAD"))
            head = await c.read_response(head=True)
            assert head.status == 200
            assert head.headers["content-length"] == full.headers["content-length"]
            assert head.headers["content-type"] == "application/json"
            # nothing else arrived: the next response starts right after the head
            await c.send(get("/nope", method="HEAD"))
            missing = await c.read_response(head=True)
            assert missing.status == 404
            await c.send(get("/health"))
            assert (await c.read_response()).status == 200


async def test_204_has_no_body_and_no_content_length() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(get("/empty"))
            r = await c.read_response()
            assert r.status == 204
            assert "content-length" not in r.headers
            await c.send(get("/health"))
            assert (await c.read_response()).status == 200


async def test_router_unit() -> None:
    router = make_router()
    r = await router(Request("GET", "/orders/open"))
    assert json.loads(r.body) == {"open": []}  # literal route beats the parameter
    r = await router.dispatch(Request("GET", "/orders/open2"))
    assert json.loads(r.body)["id"] == "open2"
    with pytest.raises(HTTPError) as info:
        await router(Request("GET", "/orders/"))  # empty parameter does not match
    assert info.value.status == 404
    with pytest.raises(HTTPError) as info:
        await router(Request("PUT", "/orders/1"))
    assert info.value.status == 405
    assert info.value.headers == (("Allow", "GET, HEAD"),)
    with pytest.raises(HTTPError) as info:
        await router(Request("GET", "/orders/%ff"))
    assert info.value.status == 400
    with pytest.raises(HTTPError) as info:
        await router(Request("GET", "*"))
    assert info.value.status == 404


async def test_explicit_head_route_wins_over_get() -> None:
    router = Router()

    async def on_get(request: Request) -> Response:
        return Response.text("get")

    async def on_head(request: Request) -> Response:
        return Response.text("head!")

    router.add("GET", "/x", on_get)
    router.add("head", "/x", on_head)
    assert (await router(Request("HEAD", "/x"))).body == b"head!"
    assert (await router(Request("GET", "/x"))).body == b"get"


@pytest.mark.parametrize(
    ("method", "pattern", "message"),
    [
        ("GET", "health", "must start with '/'"),
        ("GET", "/a/{x}/{x}", "repeats parameter"),
        ("GET", "/a/x{y}", "whole segment"),
        ("G E T", "/a", "invalid HTTP method"),
        ("GET", "/dup", "duplicate route"),
    ],
)
def test_router_rejects_bad_routes(method: str, pattern: str, message: str) -> None:
    router = Router()

    async def handler(request: Request) -> Response:
        return Response.text("")

    router.add("GET", "/dup", handler)
    with pytest.raises(ValueError, match=message):
        router.add(method, pattern, handler)


def test_request_json_errors_are_400() -> None:
    with pytest.raises(HTTPError) as info:
        Request("POST", "/", body=b"").json()
    assert info.value.status == 400
    with pytest.raises(HTTPError) as info:
        Request("POST", "/", body=b"\xff\xfe{").json()
    assert info.value.status == 400
    with pytest.raises(HTTPError):
        Request("POST", "/", body=b"[Infinity]").json()
    assert Request("POST", "/", body=b'{"a": [1, 2.5]}').json() == {"a": [1, 2.5]}


def test_request_is_an_immutable_value() -> None:
    headers = {"x": "1"}
    request = Request("GET", "/", headers=headers, query={"a": ("1", "2")})
    headers["x"] = "2"
    assert request.headers["x"] == "1"
    with pytest.raises(TypeError):
        request.headers["y"] = "3"  # type: ignore[index]
    assert request.query_value("a") == "1"
    assert request.query_value("b", "dflt") == "dflt"


def test_response_helpers_and_http_error() -> None:
    r = Response.json({"b": 1, "a": [True, None]}, status=201, headers=(("X-A", "1"),))
    assert r == Response(
        201, b'{"b":1,"a":[true,null]}', (("Content-Type", "application/json"), ("X-A", "1"))
    )
    assert error_response(418, "teapot").body == b'{"error":"teapot"}'
    with pytest.raises(ValueError):
        HTTPError(200, "not an error")


# --------------------------------------------------------------------------- failures


async def test_handler_crash_is_500_generic_logged_and_server_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.ERROR, logger="tradingd.http"):
        async with running() as address:
            async with raw_connection(address) as c:
                await c.send(get("/crash"))
                r = await c.read_response()
                assert r.status == 500
                assert r.json() == {"error": "internal server error"}
                assert b"hunter2" not in r.body
                # the same connection still works
                await c.send(get("/health"))
                assert (await c.read_response()).status == 200
            # and so do new ones
            async with raw_connection(address) as c:
                await c.send(get("/health"))
                assert (await c.read_response()).status == 200
    crash_records = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(crash_records) == 1
    assert crash_records[0].exc_info is not None
    assert "hunter2" in str(crash_records[0].exc_info[1])


@pytest.mark.parametrize("path", ["/bad-header", "/not-a-response"])
async def test_invalid_handler_response_is_500(path: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as address, raw_connection(address) as c:
            await c.send(get(path))
            r = await c.read_response()
            assert r.status == 500
            assert "injected" not in r.headers
            await c.send(get("/health"))
            assert (await c.read_response()).status == 200


async def test_max_connections_rejects_with_503_then_recovers() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(max_connections=1) as address:
            async with raw_connection(address) as first:
                await first.send(get("/health"))
                assert (await first.read_response()).status == 200  # now surely counted
                async with raw_connection(address) as second:
                    await second.send(get("/health"))
                    r = await second.read_response()
                    assert r.status == 503
                    assert r.json() == {"error": "too many connections"}
                    assert r.headers["connection"] == "close"
                    assert r.headers["retry-after"] == "1"
                    assert await second.at_eof()
                # the first connection is unaffected
                await first.send(get("/health"))
                assert (await first.read_response()).status == 200
            # once the first is closed, a new connection is served; the server
            # notices the close asynchronously, so poll (bounded by fail_after)
            while True:
                async with raw_connection(address) as third:
                    await third.send(get("/health"))
                    if (await third.read_response()).status == 200:
                        break
                await trio.sleep(0.01)


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("naming", "name", "busy"),
    [
        ({}, DEFAULT_NAME, DEFAULT_BUSY_MESSAGE),
        (
            {"name": "test HTTP", "busy_message": "busy: /health only"},
            "test HTTP",
            "busy: /health only",
        ),
    ],
)
async def test_log_lines_and_busy_answer_name_the_user_not_the_admin(
    caplog: pytest.LogCaptureFixture, naming: dict[str, str], name: str, busy: str
) -> None:
    """The server is shared: what it calls itself and its busy answer are its user's."""
    with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.DEBUG, logger="tradingd.http"):
        async with (
            running(
                max_connections=1,
                reserved_connections=1,
                priority=lambda method, path: path == "/health",
                **naming,
            ) as address,
            raw_connection(address) as first,
        ):
            await first.send(get("/crash"))
            assert (await first.read_response()).status == 500  # holds the general slot
            async with raw_connection(address) as second:  # the reserve
                await second.send(get("/orders/open"))
                r = await second.read_response()
                assert r.status == 503
                assert r.json() == {"error": busy}
                assert await second.at_eof()
    messages = [r.getMessage() for r in caplog.records]
    assert f"{name}: handler for GET /crash raised" in messages
    assert not [m for m in messages if "admin" in m]


# --------------------------------------------------------------------------- timeouts


async def test_slow_client_gets_408_and_close() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(request_timeout_s=0.2) as address, raw_connection(address) as c:
            start = trio.current_time()
            await c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            r = await c.read_response()
            assert r.status == 408
            assert r.json() == {"error": "request timeout"}
            assert await c.at_eof()
            # The server's clock starts at its accept, which can come a little
            # before `start` here (the kernel completes the connect first).
            assert 0.15 <= trio.current_time() - start < 5


async def test_slow_body_gets_408() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(request_timeout_s=0.2) as address, raw_connection(address) as c:
            await c.send(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            r = await c.read_response()
            assert r.status == 408


async def test_new_silent_connection_is_closed_without_answer() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(request_timeout_s=0.2) as address, raw_connection(address) as c:
            assert await c.at_eof()


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running(request_timeout_s=5, idle_timeout_s=0.2) as address,
            raw_connection(address) as c,
        ):
            await c.send(get("/health"))
            assert (await c.read_response()).status == 200
            start = trio.current_time()
            assert await c.at_eof()
            assert 0.2 <= trio.current_time() - start < 4


async def test_slow_handler_gets_503_and_close(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running(request_timeout_s=0.2) as address, raw_connection(address) as c:
            await c.send(get("/hang"))
            r = await c.read_response()
            assert r.status == 503
            assert r.json() == {"error": "request timed out"}
            assert await c.at_eof()


async def test_cancelling_the_server_closes_connections_and_handlers() -> None:
    handler_cancelled = trio.Event()
    handler_entered = trio.Event()

    async def handler(request: Request) -> Response:
        handler_entered.set()
        try:
            await trio.sleep_forever()
        finally:
            handler_cancelled.set()
        raise AssertionError("unreachable")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(functools.partial(serve_http, handler, "127.0.0.1", 0))
            busy = RawClient(await trio.open_tcp_stream(*address))
            idle = RawClient(await trio.open_tcp_stream(*address))
            await busy.send(get("/anything"))
            await handler_entered.wait()
            nursery.cancel_scope.cancel()
        assert handler_cancelled.is_set()
        assert await busy.at_eof()
        assert await idle.at_eof()
        await busy.stream.aclose()
        await idle.stream.aclose()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*address)  # the listener is gone too


async def test_bind_failure_is_raised_from_start() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running() as (host, port), trio.open_nursery() as nursery:
            with pytest.raises(OSError):
                await nursery.start(functools.partial(serve_http, make_router(), host, port))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"request_timeout_s": 0},
        {"idle_timeout_s": float("inf")},
        {"max_body_bytes": -1},
        {"max_header_bytes": 10},
        {"head_timeout_s": 0},
        {"head_timeout_s": float("nan")},
        {"reject_log_interval_s": -1},
        {"reserved_connections": -1},
        {"max_connections_per_client": -1},
    ],
)
async def test_invalid_limits_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await serve_http(make_router(), "127.0.0.1", 0, **kwargs)


# --------------------------------------------------------------------------- parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("[::1]:8787", ("::1", 8787)),
        ("localhost:0", ("localhost", 0)),
        (" 127.0.0.1:65535 ", ("127.0.0.1", 65535)),
    ],
)
def test_parse_listen_valid(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "missing ':PORT'"),
        ("", "missing ':PORT'"),
        (":8787", "empty host"),
        ("[]:8787", "empty host"),
        ("::1:8787", "must be in brackets"),
        ("[::1:8787", "missing ']'"),
        ("[::1]8787", "missing ':PORT' after ']'"),
        ("127.0.0.1:http", "is not a number"),
        ("127.0.0.1:-1", "is not a number"),
        ("127.0.0.1:", "is not a number"),
        ("127.0.0.1:70000", "out of range"),
    ],
)
def test_parse_listen_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_listen(text)
    assert repr(text) in str(info.value)
