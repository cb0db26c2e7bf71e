"""The sans-IO WebSocket API codec: signing, request frames, answers, errors, user data events."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import (
    CancelRejectedError,
    DuplicateOrderError,
    FilterFailureError,
    OrderNotFoundError,
    OrderRejectedError,
    SignatureError,
    TimestampOutOfWindowError,
    VenueDecodeError,
    VenueError,
    VenueOutcomeUnknownError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
)
from daemon.model import (
    NewOrder,
    OrderResponseType,
    OrderType,
    RateLimitInterval,
    RateLimitType,
    Side,
    TimeInForce,
    VenueOrderStatus,
)
from daemon.model.orders import AccountBalance
from daemon.model.userstream import (
    AccountPosition,
    BalanceUpdate,
    ExecutionReport,
    ExecutionType,
    StreamTerminated,
)
from daemon.venues.binance.codec import UsageReport
from daemon.venues.binance.codec import wsapi as ws
from daemon.venues.binance.codec.marketdata import ServerShutdown
from daemon.venues.binance.codec.userdata import OtherEvent, parse_user_event
from tests.helpers.fuzzing import fuzz_settings, hostile_bytes, hostile_json_text, json_values

from . import wsapi_payloads as W

D = Decimal


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# =========================================================================== signing


@pytest.mark.parametrize(
    ("params", "payload", "signature"),
    [
        (W.DOC_ASCII_PARAMS, W.DOC_ASCII_PAYLOAD, W.DOC_ASCII_SIGNATURE),
        (W.DOC_UNICODE_PARAMS, W.DOC_UNICODE_PAYLOAD, W.DOC_UNICODE_SIGNATURE),
    ],
    ids=["ascii", "non-ascii"],
)
def test_the_documented_hmac_examples(params: dict[str, Any], payload: str, signature: str) -> None:
    assert ws.signature_payload(params) == payload
    assert ws.sign_params(params, W.DOC_SECRET) == signature
    # ``signature`` itself never takes part, wherever it is.
    assert ws.signature_payload({**params, "signature": "x"}) == payload


@pytest.mark.parametrize(
    ("symbol", "quantity", "price", "recv_window", "signature"),
    [
        ("BTCUSDT", "0.01000000", "52000.00", 100, W.DOC_ASCII_SIGNATURE),
        (W.DOC_UNICODE_SYMBOL, "1.00000000", "0.10000000", 5000, W.DOC_UNICODE_SIGNATURE),
    ],
    ids=["ascii", "non-ascii"],
)
def test_request_frame_reproduces_the_documented_requests(
    symbol: str, quantity: str, price: str, recv_window: int, signature: str
) -> None:
    side = "SELL" if symbol == "BTCUSDT" else "BUY"
    spec = ws.WsRequestSpec(
        "order.place",
        (
            ("symbol", symbol),
            ("side", side),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", quantity),
            ("price", price),
        ),
        signed=True,
        mutating=True,
    )
    frame = ws.request_frame(
        spec,
        "4885f793-e5ad-4c3b-8f6c-55d891472b71",
        api_key=W.DOC_API_KEY,
        api_secret=W.DOC_SECRET,
        timestamp_ms=W.DOC_TIMESTAMP,
        recv_window_ms=recv_window,
    )
    assert json.loads(frame) == {
        "id": "4885f793-e5ad-4c3b-8f6c-55d891472b71",
        "method": "order.place",
        "params": {
            "symbol": symbol,
            "side": side,
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": quantity,
            "price": price,
            "recvWindow": recv_window,
            "timestamp": W.DOC_TIMESTAMP,
            "apiKey": W.DOC_API_KEY,
            "signature": signature,
        },
    }


def test_unsigned_requests_carry_no_key_and_no_params_when_empty() -> None:
    assert json.loads(ws.request_frame(ws.time_request(), 7)) == {"id": 7, "method": "time"}
    assert json.loads(ws.request_frame(ws.unsubscribe_request(3), 8)) == {
        "id": 8,
        "method": "userDataStream.unsubscribe",
        "params": {"subscriptionId": 3},
    }


def test_signed_requests_need_credentials_and_a_timestamp() -> None:
    spec = ws.subscribe_signature_request()
    with pytest.raises(ValueError, match="api_key and api_secret"):
        ws.request_frame(spec, 1, api_key="k", timestamp_ms=1)
    with pytest.raises(ValueError, match="timestamp_ms"):
        ws.request_frame(spec, 1, api_key="k", api_secret="s")
    frame = json.loads(ws.request_frame(spec, 1, api_key="k", api_secret="s", timestamp_ms=5))
    params = frame["params"]
    assert set(params) == {"apiKey", "timestamp", "signature"}
    assert (
        params["signature"] == hmac.new(b"s", b"apiKey=k&timestamp=5", hashlib.sha256).hexdigest()
    )


param_names = st.from_regex(r"\A[A-Za-z]{1,12}\Z")
param_values = st.one_of(st.text(max_size=20), st.integers(min_value=0, max_value=2**62))


@fuzz_settings()
@given(params=st.dictionaries(param_names, param_values, max_size=8), secret=st.text(max_size=40))
def test_any_params_sign_sorted_and_verify(params: dict[str, Any], secret: str) -> None:
    payload = ws.signature_payload(params)
    names = sorted(n for n in params if n != "signature")
    assert payload == "&".join(f"{n}={params[n]}" for n in names)
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    assert ws.sign_params(params, secret) == expected


# =========================================================================== requests


def test_place_order_uses_the_rest_parameters_with_numbers_as_numbers() -> None:
    order = NewOrder(
        symbol="BTCUSDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        client_order_id="cid-1",
        quantity=D("0.00100"),
        price=D("30000.10"),
        time_in_force=TimeInForce.GTC,
    )
    spec = ws.place_order_request(order, OrderResponseType.RESULT)
    assert spec.method == "order.place" and spec.endpoint == "ws-api order.place"
    assert (spec.signed, spec.mutating, spec.weight, spec.order_count) == (True, True, 1, 1)
    assert dict(spec.params) == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.00100",
        "price": "30000.10",
        "newClientOrderId": "cid-1",
        "newOrderRespType": "RESULT",
    }


def test_other_request_builders() -> None:
    cancel = ws.cancel_order_request("btcusdt", order_id=42, new_client_order_id="c-2")
    assert (cancel.method, cancel.mutating, cancel.weight, cancel.order_count) == (
        "order.cancel",
        True,
        1,
        0,
    )
    assert dict(cancel.params) == {"symbol": "BTCUSDT", "orderId": 42, "newClientOrderId": "c-2"}
    status = ws.order_status_request("BTCUSDT", client_order_id="cid-1")
    assert (status.method, status.mutating, status.weight) == ("order.status", False, 4)
    assert dict(status.params) == {"symbol": "BTCUSDT", "origClientOrderId": "cid-1"}
    assert ws.open_orders_request().weight == 80 and ws.open_orders_request().params == ()
    assert ws.open_orders_request("BTCUSDT").weight == 6
    trades = ws.my_trades_request("BTCUSDT", from_id=7, limit=1000)
    assert (trades.method, trades.weight, dict(trades.params)) == (
        "myTrades",
        20,
        {"symbol": "BTCUSDT", "fromId": 7, "limit": 1000},
    )
    assert ws.my_trades_request("BTCUSDT", order_id=3).weight == 5
    sub = ws.subscribe_signature_request()
    assert (sub.method, sub.signed, sub.weight, sub.params) == (
        "userDataStream.subscribe.signature",
        True,
        2,
        (),
    )
    assert ws.session_subscriptions_request().weight == 2
    assert not ws.ping_request().signed and ws.ping_request().weight == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: ws.cancel_order_request("BTCUSDT"),
        lambda: ws.cancel_order_request("BTCUSDT", order_id=1, client_order_id="x"),
        lambda: ws.cancel_order_request("BTC/USDT", order_id=1),
        lambda: ws.cancel_order_request("BTCUSDT", order_id=1, new_client_order_id="bad id"),
        lambda: ws.order_status_request("BTCUSDT", order_id=-1),
        lambda: ws.my_trades_request("BTCUSDT", from_id=1, start_time_ms=2),
        lambda: ws.my_trades_request("BTCUSDT", order_id=1, end_time_ms=2),
        lambda: ws.my_trades_request("BTCUSDT", limit=1001),
        lambda: ws.my_trades_request("BTCUSDT", limit=True),
        lambda: ws.unsubscribe_request(-1),
    ],
)
def test_invalid_requests_are_refused(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# =========================================================================== answers


def test_a_documented_success_answer() -> None:
    answer = ws.parse_frame(dumps(W.PLACE_ANSWER), venue="v")
    assert isinstance(answer, ws.WsAnswer)
    assert (answer.id, answer.status, answer.ok) == (W.PLACE_ANSWER["id"], 200, True)
    assert answer.rate_limits == (
        UsageReport(RateLimitType.ORDERS, 10, RateLimitInterval.SECOND, 12),
        UsageReport(RateLimitType.ORDERS, 1, RateLimitInterval.DAY, 4043),
        UsageReport(RateLimitType.REQUEST_WEIGHT, 1, RateLimitInterval.MINUTE, 321),
    )
    assert answer.rate_limits[2].window_name == "REQUEST_WEIGHT:1M"
    report = ws.read_result(answer, "order.place", "v", lambda r: ws.order_result(r, "v"))
    assert (report.order_id, report.client_order_id, report.status) == (
        12510053279,
        "a097fe6304b20a7e4fc436",
        VenueOrderStatus.NEW,
    )
    assert report.time_ms == 1655716096505


def test_documented_results_of_cancel_and_my_trades() -> None:
    cancel = ws.parse_frame(dumps({"id": 3, "status": 200, "result": W.CANCEL_RESULT}))
    assert isinstance(cancel, ws.WsAnswer)
    report = ws.read_result(cancel, "order.cancel", "v", lambda r: ws.order_result(r, "v"))
    # The order's own id, not the cancel's (origClientOrderId vs clientOrderId).
    assert report.client_order_id == "4d96324ff9d44481926157"
    assert report.status is VenueOrderStatus.CANCELED
    trades = ws.parse_frame(dumps({"id": 4, "status": 200, "result": W.MY_TRADES_RESULT}))
    assert isinstance(trades, ws.WsAnswer)
    fills = ws.read_result(trades, "myTrades", "v", lambda r: ws.trades_result(r, "v"))
    assert [(f.trade_id, f.quantity, f.is_maker) for f in fills] == [
        (1650422481, D("0.00635000"), True),
        (1650422482, D("0.00212000"), True),
    ]
    sub = ws.parse_frame(dumps({"id": 5, "status": 200, "result": {"subscriptionId": 0}}))
    assert isinstance(sub, ws.WsAnswer)
    assert ws.read_result(sub, "x", "v", ws.subscription_result) == 0
    time = ws.parse_frame(dumps({"id": 6, "status": 200, "result": {"serverTime": 16564}}))
    assert isinstance(time, ws.WsAnswer)
    assert ws.read_result(time, "time", "v", ws.server_time_result) == 16564


def test_a_result_of_the_wrong_shape_is_a_decode_error_with_the_frame() -> None:
    raw = dumps({"id": 1, "status": 200, "result": {"symbol": "BTCUSDT"}})
    answer = ws.parse_frame(raw)
    assert isinstance(answer, ws.WsAnswer)
    with pytest.raises(VenueDecodeError, match="missing field 'clientOrderId'") as info:
        ws.read_result(answer, "order.place", "v", lambda r: ws.order_result(r, "v"))
    assert info.value.raw == raw
    with pytest.raises(VenueDecodeError, match="expected a list"):
        ws.read_result(answer, "myTrades", "v", lambda r: ws.trades_result(r, "v"))


def test_documented_error_answers() -> None:
    failed = ws.parse_frame(dumps(W.FAILED_ANSWER))
    assert isinstance(failed, ws.WsAnswer) and not failed.ok
    assert (failed.error_code, failed.error_msg) == (
        -2010,
        "Account has insufficient balance for requested action.",
    )
    error = ws.answer_error(
        failed, venue="v", endpoint="ws-api order.place", mutating=True, now_ms=0
    )
    assert type(error) is OrderRejectedError
    assert (error.code, error.http_status, error.endpoint) == (-2010, 400, "ws-api order.place")
    banned = ws.parse_frame(dumps(W.BANNED_ANSWER))
    assert isinstance(banned, ws.WsAnswer)
    assert (banned.retry_after_ms, banned.server_time_ms) == (1659146400000, 1659142907531)
    error = ws.answer_error(banned, venue="v", endpoint="ws-api time", mutating=False, now_ms=0)
    assert isinstance(error, VenueRateLimitedError) and error.banned
    # Measured against the answer's own serverTime, not the local clock.
    assert error.retry_after_s == pytest.approx(3492.469)


def _error(status: int, code: int | None, msg: str = "m", **data: int) -> ws.WsAnswer:
    body: dict[str, Any] = {"id": 1, "status": status}
    if code is not None:
        body["error"] = {"code": code, "msg": msg, **({"data": data} if data else {})}
    answer = ws.parse_frame(dumps(body))
    assert isinstance(answer, ws.WsAnswer)
    return answer


@pytest.mark.parametrize(
    ("status", "code", "msg", "mutating", "expected"),
    [
        (400, -2010, "Duplicate order sent.", True, DuplicateOrderError),
        (400, -2010, "Filter failure: PRICE_FILTER", True, FilterFailureError),
        (400, -1013, "Filter failure: LOT_SIZE", True, FilterFailureError),
        (400, -2011, "Unknown order sent.", True, CancelRejectedError),
        (400, -2013, "Order does not exist.", False, OrderNotFoundError),
        (400, -1021, "Timestamp outside recvWindow", True, TimestampOutOfWindowError),
        (400, -1022, "Signature invalid", False, SignatureError),
        (503, -1007, "Timeout", True, VenueOutcomeUnknownError),
        (400, -1006, "Unexpected response", True, VenueOutcomeUnknownError),
        (500, None, "", True, VenueOutcomeUnknownError),
        (500, None, "", False, VenueUnavailableError),
        (503, -1007, "Timeout", False, VenueUnavailableError),
        (400, -1001, "Disconnected", True, VenueUnavailableError),
        (429, -1003, "Too many requests", True, VenueRateLimitedError),
        (400, -1100, "Illegal characters", False, VenueRejectedError),
    ],
)
def test_error_answers_map_as_rest_does(
    status: int, code: int | None, msg: str, mutating: bool, expected: type[VenueError]
) -> None:
    error = ws.answer_error(
        _error(status, code, msg), venue="v", endpoint="ws-api x", mutating=mutating, now_ms=0
    )
    assert type(error) is expected
    assert error.code == code and error.http_status == status


def test_retry_after_without_server_time_is_measured_from_now() -> None:
    answer = _error(429, -1003, retryAfter=1_000_060_000)
    error = ws.answer_error(
        answer, venue="v", endpoint="ws-api x", mutating=False, now_ms=1_000_000_000
    )
    assert isinstance(error, VenueRateLimitedError) and error.retry_after_s == 60.0
    # In the past: no wait; absurdly far: capped at three days.
    past = ws.answer_error(answer, venue="v", endpoint="x", mutating=False, now_ms=2_000_000_000)
    assert isinstance(past, VenueRateLimitedError) and past.retry_after_s == 0.0
    far = _error(418, -1003, retryAfter=2**62)
    capped = ws.answer_error(far, venue="v", endpoint="x", mutating=False, now_ms=0)
    assert isinstance(capped, VenueRateLimitedError) and capped.retry_after_s == 3 * 24 * 3600.0


def test_a_scrubber_masks_the_venue_message() -> None:
    answer = _error(400, -2015, "Invalid API-key sekrit-key")
    error = ws.answer_error(
        answer,
        venue="v",
        endpoint="x",
        mutating=False,
        now_ms=0,
        scrub=lambda text: text.replace("sekrit-key", "***"),
    )
    assert "sekrit-key" not in str(error) and "***" in str(error)


def test_error_details_are_read_leniently() -> None:
    # A garbled error object must not hide the status (for an order: unknown vs rejected).
    for error in ({"code": "x", "msg": 5}, [1], None, {"code": 2**70}):
        answer = ws.parse_frame(dumps({"id": 9, "status": 503, "error": error}))
        assert isinstance(answer, ws.WsAnswer)
        assert (answer.error_code, answer.error_msg) == (None, None)
        mapped = ws.answer_error(answer, venue="v", endpoint="x", mutating=True, now_ms=0)
        assert isinstance(mapped, VenueOutcomeUnknownError)


def test_rate_limits_are_read_leniently() -> None:
    limits: list[Any] = [
        "junk",
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "count": "5"},
        {"rateLimitType": "NEW_KIND", "interval": "MINUTE", "intervalNum": 1, "count": 5},
        {"rateLimitType": "ORDERS", "interval": "FORTNIGHT", "intervalNum": 1, "count": 5},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 0, "count": 5},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "count": 2**70},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "count": 7},
    ]
    answer = ws.parse_frame(dumps({"id": 1, "status": 200, "result": {}, "rateLimits": limits}))
    assert isinstance(answer, ws.WsAnswer)
    assert answer.rate_limits == (
        UsageReport(RateLimitType.ORDERS, 10, RateLimitInterval.SECOND, 7),
    )
    other = ws.parse_frame(dumps({"id": 1, "status": 200, "result": {}, "rateLimits": {}}))
    assert isinstance(other, ws.WsAnswer) and other.rate_limits == ()


# =========================================================================== events


def _event(frame: dict[str, Any]) -> ws.WsEvent:
    parsed = ws.parse_frame(dumps(frame), venue="v")
    assert isinstance(parsed, ws.WsEvent)
    return parsed


def test_documented_account_events() -> None:
    position = _event(W.wrapped(W.ACCOUNT_POSITION))
    assert position.subscription_id == 0
    assert position.event == AccountPosition(
        venue="v",
        event_time_ms=1564034571105,
        update_time_ms=1564034571073,
        balances=(AccountBalance("ETH", D("10000.000000"), D("0.000000")),),
    )
    assert _event(W.wrapped(W.BALANCE_UPDATE, 4)).event == BalanceUpdate(
        venue="v",
        event_time_ms=1573200697110,
        asset="BTC",
        delta=D("100.00000000"),
        clear_time_ms=1573200697068,
    )
    assert _event(W.wrapped(W.TERMINATED)).event == StreamTerminated(
        venue="v", event_time_ms=1728973001334
    )
    shutdown = _event({"event": {"e": "serverShutdown", "E": 1770123456789}})
    assert shutdown == ws.WsEvent(None, ServerShutdown(1770123456789))


def test_a_documented_new_execution_report() -> None:
    event = _event(W.wrapped(W.EXECUTION_REPORT)).event
    assert isinstance(event, ExecutionReport)
    assert event.execution_type is ExecutionType.NEW and event.fill is None
    assert (event.event_time_ms, event.transaction_time_ms, event.execution_id) == (
        1499405658658,
        1499405658657,
        8641984,
    )
    assert (event.reject_reason, event.cancel_client_order_id) == ("NONE", "")
    report = event.report
    assert (report.venue, report.symbol, report.order_id, report.client_order_id) == (
        "v",
        "ETHBTC",
        4293153,
        "mUvoqJxFIILMdfAW5iGSOW",
    )
    assert (report.status, report.side, report.type, report.time_in_force) == (
        VenueOrderStatus.NEW,
        Side.BUY,
        OrderType.LIMIT,
        TimeInForce.GTC,
    )
    assert (report.price, report.orig_qty, report.executed_qty) == (
        D("0.10264410"),
        D("1.00000000"),
        D("0"),
    )
    assert (report.time_ms, report.working_time_ms, report.is_working) == (
        1499405658657,
        1499405658657,
        True,
    )


def test_a_trade_carries_its_fill() -> None:
    event = _event(W.wrapped(W.trade_report())).event
    assert isinstance(event, ExecutionReport)
    assert event.execution_type is ExecutionType.TRADE
    assert event.report.status is VenueOrderStatus.PARTIALLY_FILLED
    assert event.report.executed_qty == D("0.4")
    fill = event.fill
    assert fill is not None
    assert (fill.trade_id, fill.order_id, fill.symbol, fill.venue) == (5501, 4293153, "ETHBTC", "v")
    assert (fill.price, fill.quantity, fill.quote_quantity) == (
        D("0.10264410"),
        D("0.4"),
        D("0.04105764"),
    )
    assert (fill.commission, fill.commission_asset, fill.is_buyer, fill.is_maker) == (
        D("0.00000040"),
        "ETH",
        True,
        True,
    )
    assert fill.time_ms == 1499405658657
    # Without Y (older payloads), the quote quantity is price * quantity.
    no_y = {k: v for k, v in W.trade_report(S="SELL").items() if k != "Y"}
    event = _event(W.wrapped(no_y)).event
    assert isinstance(event, ExecutionReport) and event.fill is not None
    assert event.fill.quote_quantity == D("0.10264410") * D("0.4")
    assert not event.fill.is_buyer


def test_a_cancel_names_the_order_by_its_original_id() -> None:
    event = _event(W.wrapped(W.cancel_report())).event
    assert isinstance(event, ExecutionReport)
    assert event.execution_type is ExecutionType.CANCELED
    assert event.report.client_order_id == W.EXECUTION_REPORT["c"]
    assert event.cancel_client_order_id == "cancel-1"
    assert event.report.status is VenueOrderStatus.CANCELED


def test_rejected_and_expired_reports() -> None:
    rejected = _event(
        W.wrapped(
            {**W.EXECUTION_REPORT, "x": "REJECTED", "X": "REJECTED", "r": "INSUFFICIENT_BALANCES"}
        )
    ).event
    assert isinstance(rejected, ExecutionReport)
    assert rejected.report.status is VenueOrderStatus.REJECTED
    assert rejected.reject_reason == "INSUFFICIENT_BALANCES"
    expired = _event(
        W.wrapped({**W.EXECUTION_REPORT, "f": "IOC", "x": "EXPIRED", "X": "EXPIRED", "eR": "X"})
    ).event
    assert isinstance(expired, ExecutionReport)
    assert expired.execution_type is ExecutionType.EXPIRED
    assert expired.report.time_in_force is TimeInForce.IOC


@pytest.mark.parametrize(
    "event",
    [W.LIST_STATUS, W.EXTERNAL_LOCK, {"e": "somethingNew"}, {"e": "x", "E": "not a time"}],
)
def test_other_event_types_are_ignored_not_errors(event: dict[str, Any]) -> None:
    parsed = _event(W.wrapped(event)).event
    assert isinstance(parsed, OtherEvent)
    assert parsed.event_type == event["e"]
    assert parsed.event_time_ms == (event["E"] if isinstance(event.get("E"), int) else None)


def test_parse_user_event_takes_bare_and_wrapped_events() -> None:
    bare = parse_user_event(dumps(W.BALANCE_UPDATE), venue="v")
    assert bare == parse_user_event(dumps(W.wrapped(W.BALANCE_UPDATE)), venue="v")
    with pytest.raises(VenueDecodeError):
        parse_user_event(b"{", venue="v")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "garbage",
        "[1]",
        "{}",
        dumps({"id": 1}),  # neither status nor event
        dumps({"id": 1, "status": "200", "result": {}}),
        dumps({"id": 1, "status": 200}),  # a success without a result
        dumps({"id": [1], "status": 200, "result": {}}),
        dumps({"id": 2**64, "status": 200, "result": {}}),
        dumps({"id": 1, "status": 2**64, "result": {}}),
        dumps({"event": [1]}),
        dumps({"subscriptionId": "0", "event": W.TERMINATED}),
        dumps(W.wrapped({**W.EXECUTION_REPORT, "x": "WHATEVER"})),
        dumps(W.wrapped({**W.EXECUTION_REPORT, "i": "4293153"})),
        dumps(W.wrapped({**W.EXECUTION_REPORT, "z": 1e400})),
        dumps(W.wrapped({**W.EXECUTION_REPORT, "X": None})),
        dumps(W.wrapped(W.trade_report(t=None))),
        dumps(W.wrapped(W.trade_report(m="yes"))),
        dumps(W.wrapped({**W.ACCOUNT_POSITION, "B": [{"a": "ETH", "f": "NaN", "l": "0"}]})),
        dumps(W.wrapped({**W.BALANCE_UPDATE, "d": "1e999999"})),
        dumps(W.wrapped({"E": 1})),
        "[" * 100 + "]" * 100,
        '{"id": 1, "status": 200, "result": ' + "9" * 5000 + "}",
    ],
)
def test_malformed_frames_are_decode_errors_with_the_raw_frame(raw: str) -> None:
    with pytest.raises(VenueDecodeError) as info:
        ws.parse_frame(raw, venue="v")
    assert info.value.raw == raw


def test_an_oversized_frame_is_refused_unread() -> None:
    raw = '{"id": 1, "status": 200, "result": "' + "a" * ws.MAX_WS_FRAME_BYTES + '"}'
    with pytest.raises(VenueDecodeError, match="longer than"):
        ws.parse_frame(raw)


# =========================================================================== fuzzing


@fuzz_settings()
@given(raw=st.one_of(hostile_bytes, hostile_json_text))
def test_any_frame_parses_or_is_a_decode_error(raw: str | bytes) -> None:
    try:
        frame = ws.parse_frame(raw, venue="v")
    except VenueDecodeError as exc:
        assert exc.raw == raw
    else:
        assert isinstance(frame, ws.WsAnswer | ws.WsEvent)


@fuzz_settings()
@given(
    body=st.fixed_dictionaries(
        {"id": json_values, "status": json_values},
        optional={"result": json_values, "error": json_values, "rateLimits": json_values},
    )
)
def test_any_answer_shaped_frame_parses_maps_or_is_a_decode_error(body: dict[str, Any]) -> None:
    try:
        answer = ws.parse_frame(dumps(body), venue="v")
    except VenueDecodeError:
        return
    assert isinstance(answer, ws.WsAnswer)
    if not answer.ok:
        for mutating in (True, False):
            error = ws.answer_error(answer, venue="v", endpoint="x", mutating=mutating, now_ms=0)
            assert isinstance(error, VenueError)
    for read in (
        lambda r: ws.order_result(r, "v"),
        lambda r: ws.orders_result(r, "v"),
        lambda r: ws.trades_result(r, "v"),
        ws.subscription_result,
    ):
        try:
            ws.read_result(answer, "x", "v", read)
        except VenueDecodeError:
            pass


event_fields = st.sampled_from(sorted(W.trade_report()))


@fuzz_settings()
@given(
    drop=st.lists(event_fields, max_size=3),
    replace=st.dictionaries(event_fields, json_values, max_size=3),
    kind=st.sampled_from(
        [
            "executionReport",
            "outboundAccountPosition",
            "balanceUpdate",
            "eventStreamTerminated",
            "listStatus",
        ]
    ),
)
def test_any_mutation_of_an_event_parses_or_is_a_decode_error(
    drop: list[str], replace: dict[str, Any], kind: str
) -> None:
    event: dict[str, Any] = {**W.trade_report(), **W.ACCOUNT_POSITION, **W.BALANCE_UPDATE}
    event.update(replace)
    for name in drop:
        event.pop(name, None)
    event["e"] = kind
    try:
        parsed = ws.parse_frame(dumps(W.wrapped(event)), venue="v")
    except VenueDecodeError:
        return
    assert isinstance(parsed, ws.WsEvent)
