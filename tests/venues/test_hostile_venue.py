"""The venue as a hostile peer: every parser of venue data answers with its documented error.

Issue 13, finding 3: a deeply nested JSON frame on a market stream crashed the
feed task on every reconnect (``RecursionError`` escaped the codec). The
property pinned here, for every parser of data that comes *from the venue*
(stream frames, REST bodies, error bodies, ``Retry-After`` and the
``X-MBX-USED-WEIGHT``/``X-MBX-ORDER-COUNT`` headers):

    a valid result or the documented error path — never another exception.

* frames and bodies: a model value, or :class:`~daemon.errors.VenueDecodeError`;
* error bodies: ``(code, msg)``, the text as message when it is not one;
* headers: ignored (or treated as absent) when they cannot be read.

Unit cases pin the regressions; hypothesis fuzzes every parser with the shared
hostile strategies (``tests.helpers.fuzzing``) and with structurally valid documents
whose fields are replaced by hostile values. The stream client and the
simulator's ``ws_malformed`` variants are then run over real sockets.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import (
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
)
from daemon.model import DepthUpdate, Trade
from daemon.model.orders import NewOrder, OrderType, Side, TimeInForce
from daemon.venues.binance import (
    BinanceStream,
    DisconnectReason,
    MalformedFrame,
    StreamConnected,
    StreamDisconnected,
    StreamEvent,
    codec,
)
from daemon.venues.sim.faults import (
    DEEP_FRAME_LEVELS,
    MALFORMED_VARIANTS,
    FaultInjector,
    FaultSpec,
    hostile_frame,
    parse_fault_flag,
)
from tests.helpers.binance_stream import running, stream_config, take, ws_server
from tests.helpers.fuzzing import (
    deep_json,
    fuzz_settings,
    hostile_bytes,
    hostile_json_text,
    hostile_text,
    huge_int_text,
    json_values,
)
from tests.helpers.sim import SYMBOL, client_config, rest_client, running_sim

from .binance import payloads as P

INT64 = (codec.INT64_MIN, codec.INT64_MAX)
DEEP_ARRAY = "[" * DEEP_FRAME_LEVELS + "]" * DEEP_FRAME_LEVELS
DEEP_OBJECT = '{"a":' * DEEP_FRAME_LEVELS + "1" + "}" * DEEP_FRAME_LEVELS


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def combined(stream: str, data: Any) -> dict[str, Any]:
    return {"stream": stream, "data": data}


# Every parser of a venue document, with a documented example of what it reads.
PARSERS: dict[str, tuple[Callable[[str | bytes], object], Any]] = {
    "stream trade": (codec.parse_stream_message, P.TRADE_EVENT),
    "stream depth": (codec.parse_stream_message, P.DEPTH_EVENT),
    "stream combined trade": (
        codec.parse_stream_message,
        combined("bnbbtc@trade", P.TRADE_EVENT),
    ),
    "stream combined depth": (
        codec.parse_stream_message,
        combined("bnbbtc@depth@100ms", P.DEPTH_EVENT),
    ),
    "stream serverShutdown": (
        codec.parse_stream_message,
        {"event": {"e": "serverShutdown", "E": 1}},
    ),
    "exchangeInfo": (codec.parse_exchange_info, P.EXCHANGE_INFO),
    "depth snapshot": (lambda b: codec.parse_depth(b, symbol="ETHBTC"), P.DEPTH),
    "trades": (lambda b: codec.parse_trades(b, symbol="ETHBTC"), P.TRADES),
    "order full": (codec.parse_order, P.ORDER_FULL),
    "order query": (codec.parse_order, P.QUERY_ORDER),
    "order cancel": (codec.parse_order, P.CANCEL_ORDER),
    "open orders": (codec.parse_orders, [P.QUERY_ORDER, P.QUERY_ORDER]),
    "myTrades": (codec.parse_my_trades, P.MY_TRADES),
    "account": (codec.parse_account, P.ACCOUNT),
    "server time": (codec.parse_server_time, P.SERVER_TIME),
}
PARSER_NAMES = sorted(PARSERS)


def decodes_or_refuses(parse: Callable[[str | bytes], object], payload: str | bytes) -> object:
    """The property: a result, or VenueDecodeError carrying the raw payload."""
    try:
        result = parse(payload)
    except VenueDecodeError as exc:
        assert exc.raw == payload
        assert len(str(exc)) < 1000  # the message is bounded, whatever the payload
        assert str(exc).isprintable(), str(exc)  # the venue's text is escaped: safe to log
        return None
    check_valid(result)
    return result


def check_valid(value: object) -> None:
    """A decoded value holds only bounded integers and finite, bounded decimals."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "__attrs_attrs__"):
            stack.extend(getattr(item, a.name) for a in item.__attrs_attrs__)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            assert INT64[0] <= item <= INT64[1]
        elif isinstance(item, Decimal):
            assert item.is_finite()
            assert abs(item.adjusted()) <= 2 * codec.MAX_DECIMAL_EXPONENT + 1


# =========================================================================== regressions


def test_the_documented_examples_decode() -> None:
    for name in PARSER_NAMES:
        parse, example = PARSERS[name]
        assert decodes_or_refuses(parse, dumps(example)) is not None, name


@pytest.mark.parametrize("frame", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_a_deeply_nested_frame_is_a_decode_error(frame: str) -> None:
    # Before the fix: RecursionError from json.loads escaped the codec and the stream.
    with pytest.raises(VenueDecodeError, match="nests too deep") as caught:
        codec.parse_stream_message(frame)
    assert caught.value.raw == frame
    with pytest.raises(VenueDecodeError):
        codec.parse_stream_message(frame.encode())


@pytest.mark.parametrize("name", PARSER_NAMES)
@pytest.mark.parametrize("frame", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_every_parser_refuses_deep_nesting(name: str, frame: str) -> None:
    parse, _ = PARSERS[name]
    with pytest.raises(VenueDecodeError):
        parse(frame)


@pytest.mark.parametrize("name", [n for n in PARSER_NAMES if not n.startswith("stream")])
def test_rest_bodies_nesting_past_the_limit_are_refused(name: str) -> None:
    # Deep enough to go wrong in a repr, shallow enough for the JSON parser.
    parse, _ = PARSERS[name]
    body = dumps({"serverTime": "[" * 500 + "]" * 500})[:-1].replace('"[', "[").replace(']"', "]")
    with pytest.raises(VenueDecodeError, match="nests deeper"):
        parse(body + "}")


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("t", 10**4000, "64 bits"),  # parses (under the int-string limit), fits no column
        ("T", 1 << 63, "64 bits"),
        ("E", -(1 << 63) - 1, "64 bits"),
        ("p", "1e999999", "out of range"),
        ("q", "1e-999999", "out of range"),
        ("p", "0E+999999", "out of range"),  # zero, but formatting it writes a million digits
        ("p", "1" * 65, "characters"),
        ("p", 10**40 + 1, "out of range"),
        ("p", {"nested": ["1"]}, "expected a finite decimal"),
        ("s", ["BTCUSDT"], "expected a string"),
        ("m", {"m": True}, "expected a boolean"),
        ("t", [[1]], "expected an integer"),
    ],
)
def test_structurally_valid_trade_with_hostile_fields_is_refused(
    field: str, value: Any, why: str
) -> None:
    frame = dumps({**P.TRADE_EVENT, field: value})
    with pytest.raises(VenueDecodeError, match=why):
        codec.parse_stream_message(frame)


def test_huge_price_times_quantity_is_a_decode_error_not_an_overflow() -> None:
    # Before the fix: decimal.Overflow (an ArithmeticError) from price * qty escaped.
    frame = dumps({**P.TRADE_EVENT, "p": "9e999998", "q": "9e999998"})
    with pytest.raises(VenueDecodeError):
        codec.parse_stream_message(frame)


@pytest.mark.parametrize(
    "number",
    ["9" * 5000, "1." + "0" * 100, "1e999999999999999999", "-" + "9" * 4301 + ".5"],
)
def test_json_numbers_beyond_the_limits_are_decode_errors(number: str) -> None:
    frame = dumps(P.DEPTH_EVENT).replace('"0.0024"', number)
    with pytest.raises(VenueDecodeError):
        codec.parse_stream_message(frame)


def test_a_frame_longer_than_the_limit_is_refused_before_parsing() -> None:
    frame = dumps({**P.TRADE_EVENT, "pad": "x" * codec.MAX_FRAME_BYTES})
    with pytest.raises(VenueDecodeError, match="longer than"):
        codec.parse_stream_message(frame)


def test_duplicate_keys_take_the_last_value_and_are_checked() -> None:
    good = dumps(P.TRADE_EVENT)[:-1] + ',"t":7}'
    trade = codec.parse_stream_message(good)
    assert isinstance(trade, Trade) and trade.trade_id == 7
    with pytest.raises(VenueDecodeError):
        codec.parse_stream_message(dumps(P.TRADE_EVENT)[:-1] + ',"p":{"p":"1"}}')


@pytest.mark.parametrize(
    "body",
    [DEEP_ARRAY, DEEP_OBJECT, '{"code": ' + "9" * 5000 + "}", b"\xff\xfe{", '{"code": NaN}'],
    ids=["deep-array", "deep-object", "huge-int", "bad-utf8", "nan"],
)
def test_an_unreadable_error_body_is_text(body: str | bytes) -> None:
    code, msg = codec.parse_error_body(body)
    assert code is None
    assert msg is None or len(msg) <= 300


def test_an_error_code_beyond_64_bits_is_no_code() -> None:
    assert codec.parse_error_body('{"code": ' + "9" * 40 + ', "msg": "x"}') == (None, "x")


def test_a_deep_error_body_still_maps_by_status() -> None:
    error = codec.error_from_response(
        503, DEEP_ARRAY, [], venue="binance", endpoint="GET /api/v3/depth", mutating=False
    )
    assert error.http_status == 503 and error.code is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1e300", codec.MAX_RETRY_AFTER_S),  # capped: a venue cannot freeze us for ever
        ("9" * 60, codec.MAX_RETRY_AFTER_S),
        ("9" * 5000, None),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        ("Wed, 21 Oct 2015 07:28:00 +9999", None),
        ("nan", None),
        ("-5", None),
        ("\x00\x1b[31m", None),
        ("x" * 100_000, None),
    ],
)
def test_retry_after_is_parsed_capped_or_ignored(value: str, expected: float | None) -> None:
    error = codec.error_from_response(
        429,
        '{"code": -1003, "msg": "Too many requests"}',
        [("Retry-After", value)],
        venue="binance",
        endpoint="GET /api/v3/depth",
        mutating=False,
        now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert isinstance(error, VenueRateLimitedError)
    assert error.retry_after_s == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-MBX-USED-WEIGHT-" + "9" * 5000 + "M", "5"),  # before the fix: ValueError
        ("X-MBX-USED-WEIGHT-" + "9" * 40 + "M", "5"),
        ("X-MBX-USED-WEIGHT-0M", "5"),
        ("X-MBX-USED-WEIGHT-\u0661M", "5"),  # Arabic-Indic digit
        ("X-MBX-USED-WEIGHT-1M", "9" * 5000),
        ("X-MBX-USED-WEIGHT-1M", "9" * 40),  # parses, but float() of it overflowed later
        ("X-MBX-USED-WEIGHT-1M", "\u0661\u0662"),
        ("X-MBX-USED-WEIGHT-1M", "-3"),
        ("X-MBX-USED-WEIGHT-1M", "1e3"),
        ("X-MBX-USED-WEIGHT-1M", ""),
    ],
)
def test_unreadable_usage_headers_are_ignored(name: str, value: str) -> None:
    good = ("x-mbx-order-count-10s", " 3 ")
    reports = codec.parse_usage_headers([(name, value), good])
    assert [(r.window_name, r.used) for r in reports] == [("ORDERS:10S", 3)]


# =========================================================================== fuzzing


@fuzz_settings()
@given(name=st.sampled_from(PARSER_NAMES), payload=st.one_of(hostile_bytes, hostile_json_text))
def test_fuzz_every_parser_with_hostile_documents(name: str, payload: str | bytes) -> None:
    parse, _ = PARSERS[name]
    decodes_or_refuses(parse, payload)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document where a value can be replaced (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(obj, dict | list):
        children: Any = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, child in children:
            out.append((*prefix, key))
            out.extend(_paths(child, (*prefix, key)))
    return out


_SENTINEL = "\x00HOSTILE\x00"

#: Raw JSON texts to put where a field was: wrong types, nesting, number extremes.
hostile_field = st.one_of(
    json_values.map(dumps),
    huge_int_text(4000, 4400).map(lambda s: s),  # either side of the int-string limit
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(
        [
            "1e999999",
            "-1e-999999",
            '"1e999999"',
            '"0E+999999"',
            '"-0"',
            '"NaN"',
            '"Infinity"',
            '"sNaN"',
            "1.5",
            "true",
            "null",
            '"' + "9" * 100 + '"',
            '"1_000"',
            '"\u0661\u0662"',
            str(1 << 63),
            str(-(1 << 63) - 1),
            '"\\ud800"',
        ]
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(lambda d: json.dumps(str(d))),
    deep_json(20, 2000).filter(lambda s: s.endswith(("]", "}"))),
)


@fuzz_settings(300)
@given(data=st.data(), name=st.sampled_from(PARSER_NAMES), raw=hostile_field)
def test_fuzz_documented_shapes_with_one_hostile_field(
    data: st.DataObject, name: str, raw: str
) -> None:
    parse, example = PARSERS[name]
    doc = copy.deepcopy(example)
    path = data.draw(st.sampled_from(_paths(doc)))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = _SENTINEL
    decodes_or_refuses(parse, dumps(doc).replace(dumps(_SENTINEL), raw, 1))


@fuzz_settings()
@given(
    name=st.sampled_from(PARSER_NAMES),
    key=st.one_of(
        st.sampled_from(["e", "s", "t", "p", "q", "code", "symbols", "data"]), hostile_text
    ),
    raw=hostile_field,
)
def test_fuzz_duplicate_keys(name: str, key: str, raw: str) -> None:
    parse, example = PARSERS[name]
    text = dumps(example)
    if text.endswith("}"):
        text = text[:-1] + "," + dumps(key) + ":" + raw + "}"
    decodes_or_refuses(parse, text)


@fuzz_settings()
@given(body=st.one_of(hostile_bytes, hostile_json_text, hostile_text))
def test_fuzz_error_bodies(body: str | bytes) -> None:
    code, msg = codec.parse_error_body(body)
    assert code is None or (isinstance(code, int) and INT64[0] <= code <= INT64[1])
    assert msg is None or (isinstance(msg, str) and len(msg) <= 300)


_RATE_LIMIT_BODY = '{"code": -1003, "msg": "Too many requests"}'


@fuzz_settings()
@given(
    value=st.one_of(hostile_text, huge_int_text(), st.floats().map(str), st.datetimes().map(str)),
    status=st.sampled_from([418, 429, 503]),
    body=st.one_of(st.just(_RATE_LIMIT_BODY), hostile_json_text),
)
def test_fuzz_error_answers_with_hostile_retry_after(value: str, status: int, body: str) -> None:
    error = codec.error_from_response(
        status,
        body,
        [("Retry-After", value)],
        venue="binance",
        endpoint="POST /api/v3/order",
        mutating=True,
        now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    if isinstance(error, VenueRateLimitedError) and error.retry_after_s is not None:
        assert 0.0 <= error.retry_after_s <= codec.MAX_RETRY_AFTER_S


_usage_name = st.builds(
    lambda kind, num, letter: f"X-MBX-{kind}-{num}{letter}",
    st.sampled_from(["USED-WEIGHT", "ORDER-COUNT", "used-weight", "ORDER-count"]),
    st.one_of(hostile_text, huge_int_text(), st.integers().map(str)),
    st.sampled_from(["S", "M", "H", "D", "m", "X", "", "\u0661"]),
)


@fuzz_settings()
@given(
    headers=st.lists(
        st.tuples(
            st.one_of(_usage_name, hostile_text),
            st.one_of(hostile_text, huge_int_text(), st.integers().map(str)),
        ),
        max_size=8,
    )
)
def test_fuzz_usage_headers(headers: list[tuple[str, str]]) -> None:
    for report in codec.parse_usage_headers(headers):
        assert 0 <= report.used < 10**18
        assert 1 <= report.interval_num < 10**6
        float(report.used)  # what the limiter does with it


# =========================================================================== the stream


async def test_a_deep_frame_is_dead_lettered_and_the_stream_goes_on(
    loopback_clock: trio.testing.MockClock,
) -> None:
    # Before the fix the RecursionError ended BinanceStream.run (the feed's task).
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        for frame in (DEEP_ARRAY, DEEP_OBJECT, hostile_frame("big_int", dumps(P.TRADE_EVENT))):
            await ws.send_message(frame)
        await ws.send_message(dumps({**P.TRADE_EVENT, "s": "BTCUSDT", "t": 5}))
        await trio.sleep_forever()

    with trio.fail_after(100):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            async with running(stream) as events:
                _, *bad, good = await take(events, 5)
    assert [type(e) for e in bad] == [MalformedFrame] * 3
    assert isinstance(bad[0], MalformedFrame) and bad[0].raw == DEEP_ARRAY
    assert isinstance(good, Trade) and good.trade_id == 5
    assert stream.stats.connections == 1 and stream.stats.malformed == 3


async def test_an_unexpected_decoding_error_costs_one_frame(
    loopback_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defence in depth: should a codec bug ever raise something else, the
    # stream dead-letters the frame instead of dying.
    real = codec.parse_stream_message

    def buggy(payload: str | bytes, *, venue: str = "binance") -> codec.StreamMessage:
        if payload == "boom":
            raise KeyError("a codec bug")
        return real(payload, venue=venue)

    monkeypatch.setattr(codec, "parse_stream_message", buggy)  # as the stream calls it

    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        await ws.send_message("boom")
        await ws.send_message(dumps({**P.TRADE_EVENT, "s": "BTCUSDT", "t": 6}))
        await trio.sleep_forever()

    with trio.fail_after(100):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            async with running(stream) as events:
                _, bad, good = await take(events, 3)
    assert isinstance(bad, MalformedFrame) and "KeyError" in bad.error and bad.raw == "boom"
    assert isinstance(good, Trade) and good.trade_id == 6


async def test_an_oversized_frame_is_a_clean_reconnect(
    loopback_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: trio_websocket.WebSocketRequest, n: int) -> None:
        ws = await request.accept()
        if n == 1:
            await ws.send_message("[" + "1," * codec.MAX_FRAME_BYTES + "1]")
        await ws.send_message(dumps({**P.TRADE_EVENT, "s": "BTCUSDT", "t": n}))
        await trio.sleep_forever()

    with trio.fail_after(100):
        async with ws_server(handler) as (port, _):
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(3))
            async with running(stream) as events:
                first, gone, second, good = await take(events, 4)
    assert isinstance(first, StreamConnected) and isinstance(gone, StreamDisconnected)
    assert gone.reason is DisconnectReason.CLOSED and "1009" in gone.detail
    assert isinstance(second, StreamConnected) and second.reconnect
    assert isinstance(good, Trade) and good.trade_id == 2


# A minimal WebSocket server that writes raw frames (trio-websocket cannot send
# a text frame that is not UTF-8, which is exactly what a hostile venue can).
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


async def handshake_and_send(tcp: trio.SocketStream, frames: list[bytes], n: int) -> None:
    """Answer the WebSocket handshake, send ``frames`` then trade ``n``, drain until closed."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await tcp.receive_some(4096)
        if not chunk:
            return
        request += chunk
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID.encode()).digest())
    await tcp.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    trade = dumps({**P.TRADE_EVENT, "s": "BTCUSDT", "t": n}).encode()
    for frame in [*frames, _frame(0x1, trade)]:
        await tcp.send_all(frame)
    with trio.move_on_after(60):
        while await tcp.receive_some(4096):
            pass


@asynccontextmanager
async def raw_ws_server(frames: list[bytes]) -> AsyncIterator[int]:
    """Accept WebSocket handshakes; send ``frames`` on the first connection, text on later ones."""
    count = 0

    async def serve(tcp: trio.SocketStream) -> None:
        nonlocal count
        count += 1
        try:
            await handshake_and_send(tcp, [*frames] if count == 1 else [], count)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client gave up on the connection: what the tests provoke

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_a_binary_frame_is_dead_lettered(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with raw_ws_server([_frame(0x2, b"\xff\xfe\x00binary")]) as port:
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"])
            async with running(stream) as events:
                _, bad, good = await take(events, 3)
    assert isinstance(bad, MalformedFrame) and bad.raw == b"\xff\xfe\x00binary"
    assert isinstance(good, Trade) and good.trade_id == 1


async def test_a_text_frame_that_is_not_utf8_is_a_clean_reconnect(
    loopback_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with raw_ws_server([_frame(0x1, b'{"e":"\xff\xfe"}')]) as port:
            stream = BinanceStream(stream_config(port), ["btcusdt@trade"], rng=random.Random(3))
            async with running(stream) as events:
                got: list[StreamEvent] = []
                while not (got and isinstance(got[-1], Trade)):
                    got.append(await events.receive())
    kinds = [type(e) for e in got]
    assert kinds == [StreamConnected, StreamDisconnected, StreamConnected, Trade], got
    last = got[-1]
    assert isinstance(last, Trade) and last.trade_id == 2


# =========================================================================== the simulator


def test_ws_malformed_variants_are_specified_like_other_faults() -> None:
    spec = parse_fault_flag("kind=ws_malformed,variant=deep,count=3,replace=true")
    assert (spec.variant, spec.count, spec.replace) == ("deep", 3, True)
    assert FaultSpec.from_mapping({"kind": "ws_malformed", "variant": "huge_int"}).to_json() == {
        "kind": "ws_malformed",
        "variant": "huge_int",
    }
    assert "variant" not in FaultSpec(kind="ws_malformed").to_json()
    with pytest.raises(ValueError, match="unknown ws_malformed variant"):
        parse_fault_flag("kind=ws_malformed,variant=nope")
    with pytest.raises(ValueError, match="ws_drop does not take variant"):
        parse_fault_flag("kind=ws_drop,every_s=1,variant=deep")
    with pytest.raises(ValueError, match="variant must be a string"):
        FaultSpec.from_mapping({"kind": "ws_malformed", "variant": 1})


def test_every_malformed_fault_hitting_a_message_sends_its_own_frame() -> None:
    faults = FaultInjector()
    faults.arm(FaultSpec(kind="ws_malformed", variant="deep", count=1), now=0.0)
    faults.arm(FaultSpec(kind="ws_malformed", variant="nan", count=2), now=0.0)
    first = faults.on_message(frozenset({"btcusdt@trade"}), 0.0)
    second = faults.on_message(frozenset({"btcusdt@trade"}), 0.0)
    third = faults.on_message(frozenset({"btcusdt@trade"}), 0.0)
    assert (first.malformed, first.variants) == (True, ("deep", "nan"))
    assert second.variants == ("nan",)
    assert (third.malformed, third.variants) == (False, ())


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
@pytest.mark.parametrize(
    "message",
    [dumps(P.TRADE_EVENT), dumps(combined("bnbbtc@trade", P.TRADE_EVENT))],
    ids=["raw", "combined"],
)
def test_every_hostile_frame_of_the_simulator_is_refused(variant: str, message: str) -> None:
    frame = hostile_frame(variant, message)
    with pytest.raises(VenueDecodeError):
        codec.parse_stream_message(frame)
    if variant == "deep":
        assert isinstance(frame, str) and frame.count("[") == DEEP_FRAME_LEVELS
    if variant == "binary":
        assert isinstance(frame, bytes)


async def test_the_simulator_sends_hostile_frames_and_the_stream_survives() -> None:
    with trio.fail_after(60):
        async with running_sim() as sim:
            stream = BinanceStream(client_config(sim), ["btcusdt@trade"], rng=random.Random(3))
            async with running(stream, capacity=10_000) as events:
                assert isinstance(await events.receive(), StreamConnected)
                await sim.wait_for_stream_connections(1)
                for variant in MALFORMED_VARIANTS:
                    await sim.arm(kind="ws_malformed", variant=variant, every_n=1, count=1)
                ids = await sim.market_order("BUY", "0.06")
                assert len(ids) >= 1
                got: list[StreamEvent] = []
                while [e.trade_id for e in got if isinstance(e, Trade)] != ids:
                    got.append(await events.receive())
    bad = [e for e in got if isinstance(e, MalformedFrame)]
    assert len(bad) == len(MALFORMED_VARIANTS)
    assert any(e.raw == DEEP_ARRAY for e in bad)
    assert stream.stats.connections == 1
    assert not [e for e in got if isinstance(e, StreamDisconnected | DepthUpdate)]


async def test_the_simulator_answers_a_hostile_client_request_with_an_error() -> None:
    # The simulator's own parser of client requests (SUBSCRIBE…) is hardened too:
    # a deep request used to cost the connection (RecursionError), now it is code 3.
    with trio.fail_after(30):
        async with running_sim() as sim:
            url = f"{sim.ws_url}/ws/btcusdt@trade"
            async with trio_websocket.open_websocket_url(url) as ws:
                for request in (DEEP_ARRAY, b"\xff\xfe", '{"id": ' + "9" * 5000 + "}"):
                    await ws.send_message(request)
                    answer = json.loads(await ws.get_message())
                    assert answer["code"] == 3 and "Invalid JSON" in answer["msg"], answer
                await ws.send_message('{"method": "LIST_SUBSCRIPTIONS", "id": 1}')
                assert json.loads(await ws.get_message()) == {"result": ["btcusdt@trade"], "id": 1}


@pytest.mark.parametrize("status", [400, 403])  # not retried: the error itself surfaces
async def test_a_hostile_error_body_from_the_venue_maps_by_status(status: int) -> None:
    # Before the fix the RecursionError of parse_error_body escaped the REST client.
    deep = "[" * 5000 + "]" * 5000
    with trio.fail_after(30):
        async with running_sim() as sim, rest_client(sim) as client:
            await sim.arm(kind="rest_error", path="/api/v3/depth", status=status, body=deep)
            with pytest.raises(VenueError) as caught:
                await client.depth(SYMBOL, 5)
    assert caught.value.http_status == status and caught.value.code is None
    assert caught.value.venue_message is not None and len(caught.value.venue_message) <= 300


async def test_an_answer_longer_than_the_body_limit_is_not_read_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client stops reading an answer at ``MAX_BODY_BYTES``: a query answer that
    long is a decode error, an order's is an unknown outcome, an error body keeps its
    start. (Before, the whole body was read into memory, however long.)"""
    with trio.fail_after(30):
        async with running_sim() as sim, rest_client(sim) as client:
            await client.exchange_info()  # full size first, with the real limit
            book = await client.depth(SYMBOL, limit=5)
            monkeypatch.setattr(codec, "MAX_BODY_BYTES", 200)
            with pytest.raises(VenueDecodeError, match="longer than 200 bytes"):
                await client.exchange_info()
            order = NewOrder(
                symbol=SYMBOL,
                side=Side.BUY,
                type=OrderType.LIMIT,
                client_order_id="oversized-1",
                quantity=Decimal("0.01"),
                price=book.bids[0][0] - Decimal("100.00"),
                time_in_force=TimeInForce.GTC,
            )
            with pytest.raises(VenueOutcomeUnknownError, match="may have taken effect"):
                await client.new_order(order)
            assert len(await sim.audit("oversized-1")) == 1  # it did: never resend blindly
            await sim.arm(kind="rest_error", path="/api/v3/depth", status=400, body="x" * 5000)
            with pytest.raises(VenueError) as caught:
                await client.depth(SYMBOL, 5)
            assert caught.value.http_status == 400
