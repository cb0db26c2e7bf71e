"""The admin API against a hostile local client (issue 13, findings 4, 5 and 6).

Real sockets on 127.0.0.1 port 0, the real :class:`~daemon.admin.api.AdminAPI`
over :func:`~daemon.admin.server.serve_admin_http` configured as the daemon configures
it, and behind it a real (idle) order service: the trading switches work
without a running pipeline, which is exactly when an operator needs them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from daemon.admin.api import AdminAPI, operations
from daemon.http import HostCheck, HTTPError, Request
from daemon.secrets import RedactingFilter, redact_document, redact_url, redact_urls_in_text
from tests.helpers.admin import (
    HALF_OPEN,
    TOKEN,
    Host,
    admin_server,
    hold_half_open,
    idle_service,
    one_request,
    request,
)
from tests.helpers.fuzzing import deep_json, fuzz_settings, hostile_text, huge_int_text
from tests.helpers.orders import limit_request, running_pipeline
from tests.helpers.raw_http import raw_connection
from tests.helpers.sim import running_sim, sim_config

TIMEOUT_S = 20


# --------------------------------------------------------------------------- finding 4


async def test_health_and_halt_answer_while_every_slot_is_held_half_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tradingd.http")
    with trio.fail_after(TIMEOUT_S):
        async with admin_server() as (address, _api), trio.open_nursery() as attackers:
            opened = [0]
            # Every slot, general and reserve, held by heads that never end.
            for _ in range(8 + 2):
                attackers.start_soon(hold_half_open, address, opened)
            while opened[0] < 10:  # noqa: ASYNC110 (polling a counter the attackers bump)
                await trio.sleep(0.01)
            deadline = trio.current_time() + 2.5  # several head timeouts of re-opening
            rounds = 0
            while trio.current_time() < deadline:
                with trio.fail_after(1):
                    r = await one_request(address, request("GET", "/health", address))
                assert r.status == 200, r
                with trio.fail_after(1):
                    r = await one_request(
                        address,
                        request(
                            "POST",
                            "/trading/halt",
                            address,
                            body=b'{"reason": "under attack"}',
                            token=True,
                        ),
                    )
                assert r.status == 200, r
                assert r.json()["states"]["global"]["state"] == "HALTED"
                rounds += 1
                await trio.sleep(0.1)
            assert rounds >= 5
            assert opened[0] > 20  # the attack kept re-opening all along
            attackers.cancel_scope.cancel()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # At most one summary per interval (10 s) plus the final flush; never one per connection.
    assert len(lines) <= 2, [r.getMessage() for r in lines]


async def test_a_connection_waiting_for_its_head_is_evicted_for_a_new_one() -> None:
    with trio.fail_after(TIMEOUT_S):
        server = admin_server(max_connections=1, reserved_connections=0, head_timeout_s=5)
        async with server as (address, _), raw_connection(address) as waiting:
            await waiting.send(HALF_OPEN)
            await trio.sleep(0.05)
            r = await one_request(address, request("GET", "/metrics", address))
            assert r.status == 200
            assert await waiting.at_eof()  # closed long before its 5 s head deadline


async def test_reserve_serves_only_priority_requests() -> None:
    with trio.fail_after(TIMEOUT_S):
        # Hold the general slot with a request being received: a slow body
        # is not waiting for a head any more, so it is not evicted.
        server = admin_server(max_connections=1, reserved_connections=1)
        async with server as (address, _), raw_connection(address) as slow:
            await slow.send(
                b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"
            )
            await trio.sleep(0.05)
            r = await one_request(address, request("GET", "/metrics", address))
            assert r.status == 503
            assert "only priority requests" in r.json()["error"]
            assert r.headers["connection"] == "close"
            r = await one_request(address, request("GET", "/health", address))
            assert r.status == 200
            assert r.headers["connection"] == "close"


async def test_per_client_limit_sends_the_rest_to_the_reserve() -> None:
    with trio.fail_after(TIMEOUT_S):
        server = admin_server(max_connections=8, max_connections_per_client=1)
        async with server as (address, _), raw_connection(address) as slow:
            await slow.send(
                b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"
            )
            await trio.sleep(0.05)
            r = await one_request(address, request("GET", "/metrics", address))
            assert r.status == 503  # 127.0.0.1 already holds its one general slot
            r = await one_request(address, request("GET", "/health", address))
            assert r.status == 200


async def test_a_head_must_arrive_within_head_timeout() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin_server(head_timeout_s=0.3) as (address, _):
            async with raw_connection(address) as c:
                start = trio.current_time()
                await c.send(HALF_OPEN)
                r = await c.read_response()
                assert r.status == 408
                assert 0.25 <= trio.current_time() - start < 5  # not request_timeout_s (10 s)
            async with raw_connection(address) as silent:
                start = trio.current_time()
                assert await silent.at_eof()
                assert trio.current_time() - start < 5


# --------------------------------------------------------------------------- finding 5

HOSTILE_QUERIES = [
    ("/orders", "limit=%D9%A1%D9%A2", "limit must be a decimal integer"),  # Arabic-Indic 12
    ("/orders", "limit=%C2%B2", "limit must be a decimal integer"),  # superscript two
    ("/orders", "limit=" + "9" * 5000, "limit is longer than"),
    ("/orders", "limit=1_0", "limit must be a decimal integer"),
    ("/orders", "limit=+5", "limit must be a decimal integer"),
    ("/orders", "limit=1&limit=2", "limit is given 2 times"),
    ("/orders", "limit=0", "limit must be in 1..1000"),
    ("/orders", "account=" + "a" * 500, "account is longer than"),
    ("/orders", "account=a%00b", "account contains control characters"),
    ("/orders", "account=x&account=y", "account is given 2 times"),
    ("/positions", "account=%0A%1B%5B31m", "account contains control characters"),
    ("/trading", "x=1", "unknown query parameter(s) 'x'"),
    ("/status", "full=1", "unknown query parameter(s) 'full'"),
]


@pytest.mark.parametrize(("path", "query", "needle"), HOSTILE_QUERIES)
async def test_hostile_query_values_are_400_naming_the_problem(
    path: str, query: str, needle: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin_server() as (address, _):
            r = await one_request(address, request("GET", f"{path}?{query}", address, token=True))
            assert r.status == 400, r
            assert needle in r.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 60_000,
        b'{"a":' * 6_000 + b"1" + b"}" * 6_000,
        b"[" * 20 + b"]" * 20,  # valid, but deeper than allowed
        b'{"reason": ' + b"9" * 5000 + b"}",
        b"\xff\xfe{}",
        b'{"reason": NaN}',
    ],
)
async def test_hostile_bodies_are_400(body: bytes) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin_server() as (address, _):
            for path in ("/orders", "/trading/halt", "/trading/resume"):
                r = await one_request(
                    address, request("POST", path, address, body=body, token=True)
                )
                assert r.status == 400, (path, r)
                assert r.json()["error"]


async def test_hostile_intents_against_a_real_pipeline_are_4xx(tmp_path: Path) -> None:
    """Every hostile body for ``POST /orders`` reaches the real validation and is a 400."""
    good = json.dumps(limit_request("m-1"))
    hostile = [
        good.replace('"0.010"', "1e999"),  # a float that is infinite once parsed
        good.replace('"0.010"', '"1e999999999"'),
        good.replace('"0.010"', "9" * 4000),
        good.replace('"0.010"', "9" * 5000),  # beyond the int-string limit
        good.replace('"0.010"', '"' + "9" * 5000 + '"'),
        good.replace('"m-1"', '"' + "m" * 100_000 + '"'),
        good.replace('"m-1"', "[" * 15 + "]" * 15),
        good.replace('"m-1"', '"\\ud800"'),
        good.replace('"m-1"', '"\\u0000\\n\\u001b[2J"'),
        '{"message_id": 1, "message_id": {"a": [1, {}]}}',
        "[]",
        "1",
        '"x"',
        "null",
    ]
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
            admin_server(Host(orders=run.service), max_connections=64) as (address, _),
        ):
            for body in hostile:
                raw = body.encode("utf-8", "surrogatepass")
                r = await one_request(
                    address, request("POST", "/orders", address, body=raw, token=True)
                )
                assert r.status in (400, 413), (body[:200], r)
                assert r.json()["error"]
            assert await run.service.list_orders() == []  # nothing hostile was stored
            r = await one_request(
                address, request("POST", "/orders", address, body=good.encode(), token=True)
            )
            assert r.status == 202, r  # the same intent, unharmed, is accepted


def _handle(api: AdminAPI, req: Request) -> Any:
    return trio.run(api.handle, req)


@fuzz_settings(ci_examples=60)
@given(
    op=st.sampled_from([op for op in operations() if op.method == "GET"]),
    pairs=st.lists(
        st.tuples(
            st.sampled_from(["account", "state", "limit", "full", "x"]) | hostile_text,
            hostile_text | huge_int_text(),
        ),
        max_size=4,
    ),
)
def test_fuzzed_queries_never_500(op: Any, pairs: list[tuple[str, str]]) -> None:
    """Any query on any GET route: a valid answer or a 4xx/503, never a 500."""
    api = AdminAPI(Host(orders=idle_service()))
    query: dict[str, list[str]] = {}
    for name, value in pairs:
        query.setdefault(name, []).append(value)
    path = op.path.replace("{client_order_id}", "td1-abc")
    req = Request(
        method="GET",
        path=path,
        query={k: tuple(v) for k, v in query.items()},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    try:
        response = _handle(api, req)
    except HTTPError as exc:  # the documented error path; anything else fails the test
        assert 400 <= exc.status < 500 or exc.status == 503, exc
    else:
        assert response.status < 500 or response.status == 503, response


@fuzz_settings(ci_examples=60)
@given(body=st.one_of(deep_json(min_depth=10, max_depth=5000), hostile_text, huge_int_text()))
def test_fuzzed_switch_bodies_never_500(body: str) -> None:
    api = AdminAPI(Host(orders=idle_service()))
    req = Request(
        method="POST",
        path="/trading/halt",
        headers={"authorization": f"Bearer {TOKEN}"},
        body=body.encode("utf-8", "surrogatepass"),
    )
    try:
        response = _handle(api, req)
    except HTTPError as exc:
        assert exc.status == 400, exc
    else:
        assert response.status in (200, 400), response


# --------------------------------------------------------------------------- finding 6


async def test_status_without_token_is_a_summary_and_full_needs_the_token() -> None:
    class Guarded(Host):
        def status(self) -> dict[str, Any]:
            return {"state": self.state, "orders": {"positions": [{"quantity": "1"}]}}

    with trio.fail_after(TIMEOUT_S):
        async with admin_server(Guarded(orders=idle_service())) as (address, _):
            r = await one_request(address, request("GET", "/status", address))
            assert r.status == 200
            assert "positions" not in r.body.decode()
            r = await one_request(address, request("GET", "/status/full", address))
            assert r.status == 401
            r = await one_request(address, request("GET", "/status/full", address, token=True))
            assert r.status == 200
            assert r.json()["orders"]["positions"] == [{"quantity": "1"}]


@pytest.mark.parametrize(
    ("host_header", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("[::1]:{port}", 200),
        ("127.0.0.1", 200),
        ("localhost", 200),
        ("evil.example:{port}", 421),
        ("evil.example", 421),
        ("127.0.0.1:1", 421),
        ("127.0.0.1:{port}0", 421),
        ("127.0.0.1.evil.example:{port}", 421),
        ("[::1", 421),
        ("::1:{port}", 421),
        ("localhost:{port}, evil.example", 421),
        ("127.0.0.1:%D9%A1", 421),
    ],
)
async def test_host_header_must_name_this_server(host_header: str, status: int) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin_server() as (address, _):
            value = host_header.format(port=address[1])
            r = await one_request(
                address, f"GET /health HTTP/1.1\r\nHost: {value}\r\n\r\n".encode()
            )
            assert r.status == status, value
            if status == 421:
                assert "does not name this server" in r.json()["error"]


async def test_absolute_target_and_missing_host_are_checked_too() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin_server() as (address, _):
            port = address[1]
            head = f"GET http://evil.example/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            r = await one_request(address, head.encode())
            assert r.status == 421
            r = await one_request(address, b"GET /health HTTP/1.1\r\n\r\n")
            assert r.status == 400  # h11: HTTP/1.1 needs Host
            async with raw_connection(address) as c:  # HTTP/1.0 may omit it
                await c.send(b"GET /health HTTP/1.0\r\n\r\n")
                assert (await c.read_response()).status == 200


def test_host_check_unit() -> None:
    check = HostCheck(("127.0.0.1", "localhost", "[::1]"), 8787)
    assert check.accepts("127.0.0.1:8787") and check.accepts("[::1]") and check.accepts("LocalHost")
    for bad in ("", ":8787", "127.0.0.1:", "127.0.0.1:08787x", "[::1]x", "localhost:+8787"):
        assert not check.accepts(bad), bad


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://user:pa55@stream.example:9443/ws", "wss://***@stream.example:9443/ws"),
        ("https://key@api.example/api", "https://***@api.example/api"),
        (
            "https://api.example/api/v3/order?symbol=X&apiKey=K1&signature=ab12&timestamp=1",
            "https://api.example/api/v3/order?symbol=X&apiKey=***&signature=***&timestamp=1",
        ),
        (
            "http://h/?api_key=1&API-KEY=2&Token=3&listenKey=4",
            "http://h/?api_key=***&API-KEY=***&Token=***&listenKey=***",
        ),
        ("http://127.0.0.1:8900", "http://127.0.0.1:8900"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redaction_reaches_every_string_of_a_document_and_free_text() -> None:
    doc = {
        "venues": {"b": {"rest_url": "https://u:hunter22@api.example", "n": 1}},
        "events": [{"error": "connect to wss://x.example/ws?token=tok-1234 failed"}],
        "t": ("http://a:b@c",),
    }
    shown = json.dumps(redact_document(doc))
    for secret in ("hunter22", "tok-1234", "a:b@"):
        assert secret not in shown
    assert doc["venues"]["b"]["rest_url"] == "https://u:hunter22@api.example"  # not mutated
    assert redact_urls_in_text('"https://k:s@h/p?signature=x"') == '"https://***@h/p?signature=***"'


def test_redacting_log_filter_masks_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tradingd.test.redact")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="tradingd.test.redact"):
            logger.info("stream up: %s", "wss://u:topsecret@x.example/ws?apiKey=AK9")
        assert "topsecret" not in caplog.text and "AK9" not in caplog.text
    finally:
        logger.filters.clear()


# --------------------------------------------------------------------------- helpers' sanity


def test_every_priority_route_is_declared() -> None:
    api = AdminAPI(Host(orders=idle_service()))
    assert api.is_priority("GET", "/health") and api.is_priority("HEAD", "/health")
    assert api.is_priority("POST", "/trading/halt") and api.is_priority("GET", "/status")
    assert not api.is_priority("POST", "/orders") and not api.is_priority("GET", "/metrics")
