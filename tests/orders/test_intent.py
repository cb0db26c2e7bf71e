"""Order intent validation: valid submissions accepted, every problem reported, coded, at once."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import PermanentError
from daemon.model.orders import NewOrder, OrderType, Side, TimeInForce
from daemon.orders.ids import derive_client_order_id
from daemon.orders.intent import (
    IntentValidationError,
    OrderIntent,
    ProblemCode,
)

Code = ProblemCode
D = Decimal

# --------------------------------------------------------------------------- strategies

message_ids = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
accounts = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True)
symbols = st.from_regex(r"[A-Z0-9]{2,20}", fullmatch=True)
digits = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
decimal_strings = st.builds(
    lambda whole, frac: whole if frac is None else f"{whole}.{frac}", digits, st.none() | digits
).filter(lambda text: Decimal(text) > 0)


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    order_type = draw(st.sampled_from(["LIMIT", "MARKET", "LIMIT_MAKER"]))
    request: dict[str, Any] = {
        "message_id": draw(message_ids),
        "account": draw(accounts),
        "symbol": draw(symbols),
        "side": draw(st.sampled_from(["BUY", "SELL"])),
        "type": order_type,
        "quantity": draw(decimal_strings),
    }
    if order_type != "MARKET":
        request["price"] = draw(decimal_strings)
    elif draw(st.booleans()):
        request["price"] = None  # null counts as absent
    if order_type == "LIMIT":
        request["time_in_force"] = draw(st.sampled_from(["GTC", "IOC", "FOK"]))
    elif draw(st.booleans()):
        request["time_in_force"] = None
    return request


def base(**changes: Any) -> dict[str, Any]:
    """A valid LIMIT request with ``changes`` applied (``...`` deletes a field)."""
    request: dict[str, Any] = {
        "message_id": "strat-1:42",
        "account": "main",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.010",
        "price": "65000.5",
        "time_in_force": "GTC",
    }
    for name, value in changes.items():
        if value is ...:
            request.pop(name, None)
        else:
            request[name] = value
    return request


def problems_of(request: object) -> set[tuple[ProblemCode, str | None]]:
    with pytest.raises(IntentValidationError) as info:
        OrderIntent.from_request(request)
    return set(info.value.codes)


# --------------------------------------------------------------------------- valid


def test_a_limit_request() -> None:
    intent = OrderIntent.from_request(base())
    assert intent == OrderIntent(
        message_id="strat-1:42",
        account="main",
        symbol="BTCUSDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=D("0.010"),
        price=D("65000.5"),
        time_in_force=TimeInForce.GTC,
        client_order_id=derive_client_order_id("strat-1:42", "main", "BTCUSDT"),
    )
    assert intent.idempotency_key == ("strat-1:42", "main", "BTCUSDT")
    assert intent.to_request() == base()


def test_market_and_limit_maker() -> None:
    market = OrderIntent.from_request(
        base(type="MARKET", price=..., time_in_force=..., side="SELL")
    )
    assert (market.type, market.price, market.time_in_force) == (OrderType.MARKET, None, None)
    maker = OrderIntent.from_request(base(type="LIMIT_MAKER", time_in_force=None))
    assert (maker.type, maker.price, maker.time_in_force) == (
        OrderType.LIMIT_MAKER,
        D("65000.5"),
        None,
    )


def test_the_id_prefix_is_passed_on() -> None:
    intent = OrderIntent.from_request(base(), id_prefix="x-TEST")
    assert intent.client_order_id == derive_client_order_id(
        "strat-1:42", "main", "BTCUSDT", prefix="x-TEST"
    )


@given(valid_requests())
@settings(max_examples=300, deadline=None)
def test_valid_requests_are_accepted(request: dict[str, Any]) -> None:
    intent = OrderIntent.from_request(request)
    assert intent.message_id == request["message_id"]
    assert intent.account == request["account"]
    assert intent.symbol == request["symbol"]
    assert intent.side.value == request["side"]
    assert intent.type.value == request["type"]
    assert intent.quantity == Decimal(request["quantity"])
    if request.get("price") is None:
        assert intent.price is None
    else:
        assert intent.price == Decimal(request["price"])
    assert intent.client_order_id == derive_client_order_id(
        request["message_id"], request["account"], request["symbol"]
    )
    # Round trip through the storable form, and through JSON.
    again = OrderIntent.from_request(json.loads(json.dumps(intent.to_request())))
    assert again == intent
    assert again.differing_fields(intent) == ()
    # The venue command accepts what the entry accepted.
    order = intent.to_new_order()
    assert isinstance(order, NewOrder)
    assert order.client_order_id == intent.client_order_id
    # A resubmission is the same intent (same id): idempotency starts here.
    assert OrderIntent.from_request(dict(request)) == intent


def test_tiny_decimals_round_trip_without_exponents() -> None:
    intent = OrderIntent.from_request(base(quantity="0.00000001", price="0.00000100"))
    assert intent.to_request()["quantity"] == "0.00000001"
    assert intent.to_request()["price"] == "0.00000100"


# --------------------------------------------------------------------------- one problem each

CASES: list[tuple[str, dict[str, Any], set[tuple[ProblemCode, str | None]]]] = [
    # presence
    ("missing message_id", base(message_id=...), {(Code.MISSING_FIELD, "message_id")}),
    ("null account", base(account=None), {(Code.MISSING_FIELD, "account")}),
    ("missing symbol", base(symbol=...), {(Code.MISSING_FIELD, "symbol")}),
    ("missing side", base(side=...), {(Code.MISSING_FIELD, "side")}),
    ("missing type", base(type=...), {(Code.MISSING_FIELD, "type")}),
    ("missing quantity", base(quantity=...), {(Code.MISSING_FIELD, "quantity")}),
    ("unknown field", base(note="hi"), {(Code.UNKNOWN_FIELD, "note")}),
    (
        "client id is derived",
        base(client_order_id="mine"),
        {(Code.UNKNOWN_FIELD, "client_order_id")},
    ),
    ("camelCase", base(timeInForce="GTC"), {(Code.UNKNOWN_FIELD, "timeInForce")}),
    # message_id
    ("empty message_id", base(message_id=""), {(Code.BAD_MESSAGE_ID, "message_id")}),
    ("space in message_id", base(message_id="a b"), {(Code.BAD_MESSAGE_ID, "message_id")}),
    ("long message_id", base(message_id="x" * 65), {(Code.BAD_MESSAGE_ID, "message_id")}),
    ("non-ASCII message_id", base(message_id="café"), {(Code.BAD_MESSAGE_ID, "message_id")}),
    ("control in message_id", base(message_id="a\n"), {(Code.BAD_MESSAGE_ID, "message_id")}),
    ("numeric message_id", base(message_id=42), {(Code.NOT_A_STRING, "message_id")}),
    # account, symbol
    ("upper-case account", base(account="Main"), {(Code.BAD_ACCOUNT, "account")}),
    ("account starts with -", base(account="-main"), {(Code.BAD_ACCOUNT, "account")}),
    ("long account", base(account="a" * 33), {(Code.BAD_ACCOUNT, "account")}),
    ("account is a list", base(account=["main"]), {(Code.NOT_A_STRING, "account")}),
    ("lower-case symbol", base(symbol="btcusdt"), {(Code.BAD_SYMBOL, "symbol")}),
    ("one-letter symbol", base(symbol="B"), {(Code.BAD_SYMBOL, "symbol")}),
    ("symbol with dash", base(symbol="BTC-USDT"), {(Code.BAD_SYMBOL, "symbol")}),
    # choices
    ("lower-case side", base(side="buy"), {(Code.INVALID_CHOICE, "side")}),
    ("numeric side", base(side=1), {(Code.NOT_A_STRING, "side")}),
    ("unknown type", base(type="STOP"), {(Code.INVALID_CHOICE, "type")}),
    ("stop type", base(type="STOP_LOSS_LIMIT"), {(Code.UNSUPPORTED_ORDER_TYPE, "type")}),
    ("unknown tif", base(time_in_force="DAY"), {(Code.INVALID_CHOICE, "time_in_force")}),
    # decimals
    ("float quantity", base(quantity=0.01), {(Code.DECIMAL_NOT_STRING, "quantity")}),
    ("int quantity", base(quantity=1), {(Code.DECIMAL_NOT_STRING, "quantity")}),
    ("bool quantity", base(quantity=True), {(Code.DECIMAL_NOT_STRING, "quantity")}),
    ("word quantity", base(quantity="one"), {(Code.DECIMAL_SYNTAX, "quantity")}),
    ("empty quantity", base(quantity=""), {(Code.DECIMAL_SYNTAX, "quantity")}),
    ("comma quantity", base(quantity="1,5"), {(Code.DECIMAL_SYNTAX, "quantity")}),
    ("NaN quantity", base(quantity="NaN"), {(Code.DECIMAL_NOT_FINITE, "quantity")}),
    ("sNaN quantity", base(quantity="sNaN"), {(Code.DECIMAL_NOT_FINITE, "quantity")}),
    ("infinite price", base(price="Infinity"), {(Code.DECIMAL_NOT_FINITE, "price")}),
    ("zero quantity", base(quantity="0"), {(Code.DECIMAL_NOT_POSITIVE, "quantity")}),
    ("zero point zero", base(quantity="0.000"), {(Code.DECIMAL_NOT_POSITIVE, "quantity")}),
    ("negative price", base(price="-1"), {(Code.DECIMAL_NOT_POSITIVE, "price")}),
    ("negative zero", base(price="-0"), {(Code.DECIMAL_NOT_POSITIVE, "price")}),
    ("exponent", base(quantity="1e3"), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("plus sign", base(quantity="+1"), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("blanks", base(quantity=" 1 "), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("separators", base(quantity="1_000"), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("leading point", base(quantity=".5"), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("trailing point", base(quantity="5."), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("Arabic digit", base(quantity="\u0661"), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("21 digits", base(quantity="1" * 21), {(Code.DECIMAL_FORMAT, "quantity")}),
    ("huge string", base(price="1" * 10_000), {(Code.DECIMAL_FORMAT, "price")}),
    # shape per type
    ("LIMIT without price", base(price=...), {(Code.PRICE_REQUIRED, "price")}),
    ("LIMIT with null price", base(price=None), {(Code.PRICE_REQUIRED, "price")}),
    (
        "LIMIT without tif",
        base(time_in_force=...),
        {(Code.TIME_IN_FORCE_REQUIRED, "time_in_force")},
    ),
    (
        "MARKET with price",
        base(type="MARKET", time_in_force=...),
        {(Code.PRICE_NOT_ALLOWED, "price")},
    ),
    (
        "MARKET with a bad price: the presence is the problem",
        base(type="MARKET", time_in_force=..., price="junk"),
        {(Code.PRICE_NOT_ALLOWED, "price")},
    ),
    (
        "MARKET with tif",
        base(type="MARKET", price=...),
        {(Code.TIME_IN_FORCE_NOT_ALLOWED, "time_in_force")},
    ),
    (
        "LIMIT_MAKER with tif",
        base(type="LIMIT_MAKER"),
        {(Code.TIME_IN_FORCE_NOT_ALLOWED, "time_in_force")},
    ),
    (
        "LIMIT_MAKER without price",
        base(type="LIMIT_MAKER", time_in_force=..., price=...),
        {(Code.PRICE_REQUIRED, "price")},
    ),
    (
        "unsupported type: no shape problems, values still checked",
        base(type="TAKE_PROFIT", price="x"),
        {(Code.UNSUPPORTED_ORDER_TYPE, "type"), (Code.DECIMAL_SYNTAX, "price")},
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_problem_is_reported_with_its_code(
    request_: dict[str, Any], expected: set[tuple[ProblemCode, str | None]]
) -> None:
    assert problems_of(request_) == expected


@pytest.mark.parametrize("request_", [[], "x", None, 42, [("message_id", "m")]])
def test_not_an_object(request_: object) -> None:
    assert problems_of(request_) == {(Code.NOT_AN_OBJECT, None)}


def test_empty_object_lists_every_required_field() -> None:
    assert problems_of({}) == {
        (Code.MISSING_FIELD, name)
        for name in ("message_id", "account", "symbol", "side", "type", "quantity")
    }


# --------------------------------------------------------------------------- all together

#: Per field, mutations whose problems do not depend on any other field.
MUTATIONS: dict[str, list[tuple[Any, set[tuple[ProblemCode, str | None]]]]] = {
    "message_id": [
        (..., {(Code.MISSING_FIELD, "message_id")}),
        ("a b", {(Code.BAD_MESSAGE_ID, "message_id")}),
        (7, {(Code.NOT_A_STRING, "message_id")}),
    ],
    "account": [
        ("Main", {(Code.BAD_ACCOUNT, "account")}),
        (None, {(Code.MISSING_FIELD, "account")}),
    ],
    "symbol": [("btc", {(Code.BAD_SYMBOL, "symbol")})],
    "side": [("HOLD", {(Code.INVALID_CHOICE, "side")}), (..., {(Code.MISSING_FIELD, "side")})],
    # An invalid type skips the shape checks, so it combines with any price/tif mutation.
    "type": [("STOP", {(Code.INVALID_CHOICE, "type")})],
    "quantity": [
        (1.5, {(Code.DECIMAL_NOT_STRING, "quantity")}),
        ("0", {(Code.DECIMAL_NOT_POSITIVE, "quantity")}),
        ("1e-3", {(Code.DECIMAL_FORMAT, "quantity")}),
        ("NaN", {(Code.DECIMAL_NOT_FINITE, "quantity")}),
        ("abc", {(Code.DECIMAL_SYNTAX, "quantity")}),
    ],
    "price": [
        (2.5, {(Code.DECIMAL_NOT_STRING, "price")}),
        ("-3", {(Code.DECIMAL_NOT_POSITIVE, "price")}),
    ],
    "time_in_force": [("GTD", {(Code.INVALID_CHOICE, "time_in_force")})],
    "extra": [("anything", {(Code.UNKNOWN_FIELD, "extra")})],
}


@st.composite
def broken_requests(
    draw: st.DrawFn,
) -> tuple[dict[str, Any], set[tuple[ProblemCode, str | None]]]:
    chosen = draw(
        st.lists(
            st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=len(MUTATIONS), unique=True
        )
    )
    changes: dict[str, Any] = {}
    expected: set[tuple[ProblemCode, str | None]] = set()
    for field in chosen:
        value, problems = draw(st.sampled_from(MUTATIONS[field]))
        changes[field] = value
        expected |= problems
    return base(**changes), expected


FIELD_ORDER = [
    "message_id",
    "account",
    "symbol",
    "side",
    "type",
    "quantity",
    "price",
    "time_in_force",
]


@given(broken_requests())
@settings(max_examples=300, deadline=None)
def test_all_problems_are_reported_together(
    case: tuple[dict[str, Any], set[tuple[ProblemCode, str | None]]],
) -> None:
    request, expected = case
    with pytest.raises(IntentValidationError) as info:
        OrderIntent.from_request(request)
    error = info.value
    assert set(error.codes) == expected
    assert len(error.problems) == len(expected)  # one problem per broken field
    # Unknown fields first, then the request's field order.
    ranks = [
        -1 if p.field not in FIELD_ORDER else FIELD_ORDER.index(p.field) for p in error.problems
    ]
    assert ranks == sorted(ranks)
    for problem in error.problems:
        assert problem.field is not None and problem.field in str(error)
        assert problem.code.value in str(error)


def test_error_shape() -> None:
    with pytest.raises(PermanentError) as info:
        OrderIntent.from_request(base(quantity=0.5, symbol="x"))
    error = info.value
    assert isinstance(error, IntentValidationError)
    body = json.loads(json.dumps([p.as_dict() for p in error.problems]))
    assert body == [
        {
            "code": "BAD_SYMBOL",
            "field": "symbol",
            "message": "must be 2-20 upper-case letters or digits, got 'x'",
        },
        {
            "code": "DECIMAL_NOT_STRING",
            "field": "quantity",
            "message": 'must be a decimal string like "0.001", got a float 0.5',
        },
    ]


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(IntentValidationError) as info:
        OrderIntent.from_request(base(message_id="y" * 5000))
    assert len(str(info.value)) < 200


# --------------------------------------------------------------------------- typed construction


def test_create_matches_from_request() -> None:
    typed = OrderIntent.create(
        message_id="strat-1:42",
        account="main",
        symbol="BTCUSDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=D("0.010"),
        price=D("65000.5"),
        time_in_force=TimeInForce.GTC,
    )
    assert typed == OrderIntent.from_request(base())


def test_create_reports_every_problem() -> None:
    with pytest.raises(IntentValidationError) as info:
        OrderIntent.create(
            message_id="",
            account="main",
            symbol="BTCUSDT",
            side=Side.BUY,
            type=OrderType.MARKET,
            quantity=D("-1"),
            price=D("NaN"),
            time_in_force=TimeInForce.IOC,
        )
    assert set(info.value.codes) == {
        (Code.BAD_MESSAGE_ID, "message_id"),
        (Code.DECIMAL_NOT_POSITIVE, "quantity"),
        (Code.DECIMAL_NOT_FINITE, "price"),
        (Code.PRICE_NOT_ALLOWED, "price"),
        (Code.TIME_IN_FORCE_NOT_ALLOWED, "time_in_force"),
    }


def test_direct_construction_is_checked() -> None:
    good = OrderIntent.from_request(base())
    fields = {name: getattr(good, name) for name in FIELD_ORDER} | {
        "client_order_id": good.client_order_id
    }
    with pytest.raises(IntentValidationError) as info:
        OrderIntent(**(fields | {"client_order_id": "not valid!", "quantity": 0.5, "side": "BUY"}))
    assert set(info.value.codes) == {
        (Code.BAD_CLIENT_ORDER_ID, "client_order_id"),
        (Code.DECIMAL_NOT_STRING, "quantity"),
        (Code.INVALID_CHOICE, "side"),
    }
    with pytest.raises(IntentValidationError) as info:
        OrderIntent(**(fields | {"type": OrderType.STOP_LOSS, "time_in_force": "GTC"}))
    assert set(info.value.codes) == {
        (Code.UNSUPPORTED_ORDER_TYPE, "type"),
        (Code.INVALID_CHOICE, "time_in_force"),
    }


def test_differing_fields_names_a_reused_message_id() -> None:
    first = OrderIntent.from_request(base())
    other = OrderIntent.from_request(base(quantity="0.02", side="SELL"))
    assert first.differing_fields(other) == ("side", "quantity")
    moved = OrderIntent.from_request(base(symbol="ETHUSDT"))
    assert first.differing_fields(moved) == ("symbol", "client_order_id")
