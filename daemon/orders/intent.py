"""Order intents: a validated submission, before risk and before the outbox.

Both entry points — ``POST /orders`` on the admin API and the in-process API
for strategies — hand a plain mapping of JSON-like values to
:meth:`OrderIntent.from_request`. It checks *everything* and raises one
:class:`IntentValidationError` listing every problem, each with a stable
:class:`ProblemCode` and the field it concerns, so the admin API can answer
400 with the whole list and a client fixes its request in one pass.

Accepted request fields::

    message_id     required  the caller's idempotency key: 1-64 printable ASCII characters
                             (no spaces: "abc" and "abc " would be two keys nobody can tell apart)
    account        required  account name, like a config table name: [a-z0-9][a-z0-9_-]{0,31}
    symbol         required  venue symbol, upper case: [A-Z0-9]{2,20}
    side           required  "BUY" | "SELL"
    type           required  "LIMIT" | "MARKET" | "LIMIT_MAKER"
    quantity       required  decimal string > 0
    price          LIMIT and LIMIT_MAKER only   decimal string > 0
    time_in_force  LIMIT only                   "GTC" | "IOC" | "FOK"

``null`` counts as absent for the optional fields and as missing for the
required ones. Decimals must be *strings* in the venue's plain notation
(``^[0-9]{1,20}(\\.[0-9]{1,20})?$``): a JSON number has already been through
a binary float, and exponents, signs, blanks and digit separators, which
:class:`~decimal.Decimal` would silently accept, are refused so the value we
store is the value the caller wrote. Anything else is an unknown field, including
``client_order_id``: it is derived (:mod:`daemon.orders.ids`), never chosen.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypedDict, TypeVar

import attrs

from daemon.errors import PermanentError
from daemon.model.orders import (
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
    is_valid_client_order_id,
)
from daemon.orders.ids import DEFAULT_PREFIX, derive_client_order_id

__all__ = [
    "ACCOUNT_PATTERN",
    "DECIMAL_PATTERN",
    "MESSAGE_ID_PATTERN",
    "REQUEST_FIELDS",
    "SUPPORTED_ORDER_TYPES",
    "SYMBOL_PATTERN",
    "IntentProblem",
    "IntentValidationError",
    "OrderIntent",
    "ProblemCode",
]

#: The caller's idempotency key: 1-64 printable ASCII characters, space excluded.
MESSAGE_ID_PATTERN: Final = re.compile(r"\A[\x21-\x7e]{1,64}\Z")
#: Account names follow config table names (``[accounts.NAME]``).
ACCOUNT_PATTERN: Final = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
#: Venue symbols, as in the config's symbol lists.
SYMBOL_PATTERN: Final = re.compile(r"\A[A-Z0-9]{2,20}\Z")
#: Binance's decimal notation for prices and quantities.
DECIMAL_PATTERN: Final = re.compile(r"\A[0-9]{1,20}(\.[0-9]{1,20})?\Z")
#: Decimal strings longer than this are refused before parsing.
_DECIMAL_MAX_CHARS: Final = 41

#: Order types the entry accepts, in the order messages list them (stop orders
#: are not offered yet).
_OFFERED_TYPES: Final = (OrderType.LIMIT, OrderType.MARKET, OrderType.LIMIT_MAKER)
SUPPORTED_ORDER_TYPES: Final = frozenset(_OFFERED_TYPES)

#: Stands in for the derived id while a key field is invalid, so that typed
#: construction still reports every problem at once (it is never stored).
_PLACEHOLDER_ID: Final = "invalid"

_E = TypeVar("_E", bound=enum.Enum)

#: Every field a request may carry, in the order problems are reported.
REQUEST_FIELDS: Final = (
    "message_id",
    "account",
    "symbol",
    "side",
    "type",
    "quantity",
    "price",
    "time_in_force",
)
_REQUIRED: Final = frozenset(REQUEST_FIELDS[:6])


class ProblemCode(enum.StrEnum):
    """Stable machine codes of :class:`IntentProblem` (part of the API: never renamed)."""

    NOT_AN_OBJECT = "NOT_AN_OBJECT"  #: the request is not a mapping
    MISSING_FIELD = "MISSING_FIELD"  #: a required field is absent or null
    UNKNOWN_FIELD = "UNKNOWN_FIELD"  #: a field the entry does not know
    NOT_A_STRING = "NOT_A_STRING"  #: a text field holds a number, list, …
    INVALID_CHOICE = "INVALID_CHOICE"  #: side/type/time_in_force outside its choices
    UNSUPPORTED_ORDER_TYPE = "UNSUPPORTED_ORDER_TYPE"  #: a venue type the entry does not offer
    BAD_MESSAGE_ID = "BAD_MESSAGE_ID"  #: not 1-64 printable ASCII characters
    BAD_ACCOUNT = "BAD_ACCOUNT"  #: not an account name
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"  #: a valid name, but no [accounts.NAME] table has it
    BAD_SYMBOL = "BAD_SYMBOL"  #: not an upper-case venue symbol
    DECIMAL_NOT_STRING = "DECIMAL_NOT_STRING"  #: a JSON number (a float) instead of a string
    DECIMAL_SYNTAX = "DECIMAL_SYNTAX"  #: not a number at all
    DECIMAL_NOT_FINITE = "DECIMAL_NOT_FINITE"  #: NaN or Infinity
    DECIMAL_NOT_POSITIVE = "DECIMAL_NOT_POSITIVE"  #: zero or negative
    DECIMAL_FORMAT = "DECIMAL_FORMAT"  #: a number, but not in plain venue notation
    PRICE_REQUIRED = "PRICE_REQUIRED"  #: LIMIT / LIMIT_MAKER without a price
    PRICE_NOT_ALLOWED = "PRICE_NOT_ALLOWED"  #: MARKET with a price
    TIME_IN_FORCE_REQUIRED = "TIME_IN_FORCE_REQUIRED"  #: LIMIT without time_in_force
    TIME_IN_FORCE_NOT_ALLOWED = "TIME_IN_FORCE_NOT_ALLOWED"  #: MARKET / LIMIT_MAKER with one
    #: typed construction only: a client order id not in the venue's format
    BAD_CLIENT_ORDER_ID = "BAD_CLIENT_ORDER_ID"


@attrs.frozen
class IntentProblem:
    """One reason a submission was refused.

    Attributes:
        code: Stable machine code.
        field: The request field concerned (``None`` for the request as a whole).
        message: Human explanation, quoting the offending value (shortened).
    """

    code: ProblemCode
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready form for the 400 answer."""
        return {"code": self.code.value, "field": self.field, "message": self.message}


class IntentValidationError(PermanentError):
    """A submitted order intent is malformed; ``problems`` lists every reason.

    Raised by :meth:`OrderIntent.from_request` (and by :class:`OrderIntent`
    itself for bad typed values). The admin API answers 400 with
    ``[p.as_dict() for p in problems]``.
    """

    def __init__(self, problems: Iterable[IntentProblem]) -> None:
        self.problems: tuple[IntentProblem, ...] = tuple(problems)
        super().__init__(
            "invalid order intent: "
            + "; ".join(
                f"{p.field or 'request'}: {p.code.value}: {p.message}" for p in self.problems
            )
        )

    @property
    def codes(self) -> frozenset[tuple[ProblemCode, str | None]]:
        """The set of ``(code, field)`` pairs, handy for tests and metrics."""
        return frozenset((p.code, p.field) for p in self.problems)


def _field_rank(problem: IntentProblem) -> int:
    """Sort key: unknown fields first, then the request's field order (stable within a field)."""
    if problem.field in REQUEST_FIELDS:
        return REQUEST_FIELDS.index(problem.field) + 1
    return 0


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- field checks
# Each returns the problems of one typed value, so that from_request (raw input) and
# OrderIntent.__attrs_post_init__ (typed input) apply the very same rules.


def _text_problems(field: str, value: str) -> list[IntentProblem]:
    if field == "message_id" and MESSAGE_ID_PATTERN.match(value) is None:
        return [
            IntentProblem(
                ProblemCode.BAD_MESSAGE_ID,
                field,
                f"must be 1-64 printable ASCII characters without spaces, got {_show(value)}",
            )
        ]
    if field == "account" and ACCOUNT_PATTERN.match(value) is None:
        return [
            IntentProblem(
                ProblemCode.BAD_ACCOUNT,
                field,
                f"must match [a-z0-9][a-z0-9_-]{{0,31}}, got {_show(value)}",
            )
        ]
    if field == "symbol" and SYMBOL_PATTERN.match(value) is None:
        return [
            IntentProblem(
                ProblemCode.BAD_SYMBOL,
                field,
                f"must be 2-20 upper-case letters or digits, got {_show(value)}",
            )
        ]
    return []


def _decimal_value_problems(field: str, value: Decimal) -> list[IntentProblem]:
    if not value.is_finite():
        return [
            IntentProblem(ProblemCode.DECIMAL_NOT_FINITE, field, f"must be finite, got {value}")
        ]
    if value <= 0:
        return [IntentProblem(ProblemCode.DECIMAL_NOT_POSITIVE, field, f"must be > 0, got {value}")]
    return []


def _parse_decimal(field: str, raw: object) -> tuple[Decimal | None, list[IntentProblem]]:
    if not isinstance(raw, str):
        kind = "a float" if isinstance(raw, float) else type(raw).__name__
        return None, [
            IntentProblem(
                ProblemCode.DECIMAL_NOT_STRING,
                field,
                f'must be a decimal string like "0.001", got {kind} {_show(raw)}',
            )
        ]
    if len(raw) > _DECIMAL_MAX_CHARS:
        return None, [
            IntentProblem(
                ProblemCode.DECIMAL_FORMAT,
                field,
                f"must be at most 20 digits, a point and 20 digits, got {_show(raw)}",
            )
        ]
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None, [
            IntentProblem(ProblemCode.DECIMAL_SYNTAX, field, f"is not a number: {_show(raw)}")
        ]
    problems = _decimal_value_problems(field, value)
    if problems:
        return None, problems
    if DECIMAL_PATTERN.match(raw) is None:
        return None, [
            IntentProblem(
                ProblemCode.DECIMAL_FORMAT,
                field,
                f"must be plain digits with an optional fraction (no sign, exponent, "
                f"blanks or separators), got {_show(raw)}",
            )
        ]
    return value, []


def _shape_problems(
    order_type: OrderType, *, has_price: bool, has_time_in_force: bool
) -> list[IntentProblem]:
    name = order_type.value
    problems = []
    if order_type.needs_price and not has_price:
        problems.append(
            IntentProblem(ProblemCode.PRICE_REQUIRED, "price", f"a {name} order needs a price")
        )
    if not order_type.needs_price and has_price:
        problems.append(
            IntentProblem(ProblemCode.PRICE_NOT_ALLOWED, "price", f"a {name} order takes no price")
        )
    if order_type.needs_time_in_force and not has_time_in_force:
        problems.append(
            IntentProblem(
                ProblemCode.TIME_IN_FORCE_REQUIRED,
                "time_in_force",
                f"a {name} order needs a time_in_force",
            )
        )
    if not order_type.needs_time_in_force and has_time_in_force:
        problems.append(
            IntentProblem(
                ProblemCode.TIME_IN_FORCE_NOT_ALLOWED,
                "time_in_force",
                f"a {name} order takes no time_in_force",
            )
        )
    return problems


def _choice(
    field: str, raw: object, enum_type: type[_E], problems: list[IntentProblem]
) -> _E | None:
    if not isinstance(raw, str):
        problems.append(
            IntentProblem(
                ProblemCode.NOT_A_STRING, field, f"must be a string, got {type(raw).__name__}"
            )
        )
        return None
    try:
        return enum_type(raw)
    except ValueError:
        choices = " | ".join(str(member.value) for member in enum_type)
        problems.append(
            IntentProblem(ProblemCode.INVALID_CHOICE, field, f"must be {choices}, got {_show(raw)}")
        )
        return None


# --------------------------------------------------------------------------- the request


class _IntentFields(TypedDict):
    """:class:`OrderIntent`'s fields, as ``_parse_request`` reads them from a request."""

    message_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None
    time_in_force: TimeInForce | None
    client_order_id: str


def _parse_request(request: Mapping[str, Any] | object, *, id_prefix: str) -> _IntentFields:
    """The typed fields of a raw submission (:meth:`OrderIntent.from_request`).

    Raises:
        IntentValidationError: with *every* problem found, in field order.
    """
    if not isinstance(request, Mapping):
        raise IntentValidationError(
            [
                IntentProblem(
                    ProblemCode.NOT_AN_OBJECT,
                    None,
                    f"the request must be an object, got {type(request).__name__}",
                )
            ]
        )
    problems: list[IntentProblem] = [
        IntentProblem(ProblemCode.UNKNOWN_FIELD, str(key), f"unknown field {_show(key)}")
        for key in sorted(request, key=str)
        if key not in REQUEST_FIELDS
    ]
    raw = {name: request.get(name) for name in REQUEST_FIELDS}
    for name in sorted(_REQUIRED, key=REQUEST_FIELDS.index):
        if raw[name] is None:
            state = "null" if name in request else "missing"
            problems.append(
                IntentProblem(ProblemCode.MISSING_FIELD, name, f"required field is {state}")
            )

    texts: dict[str, str] = {}
    for name in ("message_id", "account", "symbol"):
        value = raw[name]
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(
                IntentProblem(
                    ProblemCode.NOT_A_STRING,
                    name,
                    f"must be a string, got {type(value).__name__}",
                )
            )
            continue
        found = _text_problems(name, value)
        problems += found
        if not found:
            texts[name] = value

    side = _choice("side", raw["side"], Side, problems) if raw["side"] is not None else None

    order_type: OrderType | None = None
    if raw["type"] is not None:
        order_type = _choice("type", raw["type"], OrderType, problems)
        if order_type is not None and order_type not in SUPPORTED_ORDER_TYPES:
            offered = " | ".join(t.value for t in _OFFERED_TYPES)
            problems.append(
                IntentProblem(
                    ProblemCode.UNSUPPORTED_ORDER_TYPE,
                    "type",
                    f"{order_type.value} orders are not offered; use {offered}",
                )
            )
            order_type = None

    quantity: Decimal | None = None
    if raw["quantity"] is not None:
        quantity, found = _parse_decimal("quantity", raw["quantity"])
        problems += found

    has_price = raw["price"] is not None
    has_tif = raw["time_in_force"] is not None
    shape = (
        _shape_problems(order_type, has_price=has_price, has_time_in_force=has_tif)
        if order_type is not None
        else []
    )
    # A field the type forbids is reported as such; its value is not worth parsing.
    forbidden = {
        p.field
        for p in shape
        if p.code in (ProblemCode.PRICE_NOT_ALLOWED, ProblemCode.TIME_IN_FORCE_NOT_ALLOWED)
    }

    price: Decimal | None = None
    if has_price and "price" not in forbidden:
        price, found = _parse_decimal("price", raw["price"])
        problems += found
    problems += [p for p in shape if p.field == "price"]

    time_in_force: TimeInForce | None = None
    if has_tif and "time_in_force" not in forbidden:
        time_in_force = _choice("time_in_force", raw["time_in_force"], TimeInForce, problems)
    problems += [p for p in shape if p.field == "time_in_force"]

    if problems:
        raise IntentValidationError(sorted(problems, key=_field_rank))
    # No problems means every required value parsed; the asserts narrow the types.
    assert side is not None and order_type is not None and quantity is not None
    return _IntentFields(
        message_id=texts["message_id"],
        account=texts["account"],
        symbol=texts["symbol"],
        side=side,
        type=order_type,
        quantity=quantity,
        price=price,
        time_in_force=time_in_force,
        client_order_id=derive_client_order_id(
            texts["message_id"], texts["account"], texts["symbol"], prefix=id_prefix
        ),
    )


# --------------------------------------------------------------------------- the intent


def _format_decimal(value: Decimal) -> str:
    # "f" never switches to exponent notation ("1E-7"), so from_request reads it back.
    return format(value, "f")


@attrs.frozen(kw_only=True)
class OrderIntent:
    """A validated order submission: what to trade, and under which idempotency key.

    Build it with :meth:`from_request` (raw mapping, every problem reported)
    or :meth:`create` (typed values, for strategies); both derive
    ``client_order_id`` from ``(message_id, account, symbol)``. Direct
    construction checks the same rules and the id's format.

    Attributes:
        message_id: The caller's idempotency key.
        account: The account to trade on.
        symbol: Venue symbol.
        side: BUY or SELL.
        type: LIMIT, MARKET or LIMIT_MAKER.
        quantity: Base quantity (> 0).
        price: Limit price; LIMIT and LIMIT_MAKER only.
        time_in_force: LIMIT only.
        client_order_id: Deterministic id sent to the venue (docs/ARCHITECTURE.md §4 Orders).

    Raises:
        IntentValidationError: a value breaks the rules above.
    """

    message_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    client_order_id: str

    def __attrs_post_init__(self) -> None:
        problems: list[IntentProblem] = []
        for field in ("message_id", "account", "symbol"):
            value = getattr(self, field)
            if not isinstance(value, str):
                problems.append(
                    IntentProblem(ProblemCode.NOT_A_STRING, field, f"must be a str, got {value!r}")
                )
            else:
                problems += _text_problems(field, value)
        # Typed as object: direct construction is not type-checked at run time.
        side: object = self.side
        time_in_force: object = self.time_in_force
        if not isinstance(side, Side):
            problems.append(
                IntentProblem(ProblemCode.INVALID_CHOICE, "side", f"must be a Side: {side!r}")
            )
        if self.type not in SUPPORTED_ORDER_TYPES:
            problems.append(
                IntentProblem(
                    ProblemCode.UNSUPPORTED_ORDER_TYPE, "type", f"not offered: {self.type!r}"
                )
            )
        for field in ("quantity", "price"):
            value = getattr(self, field)
            if value is None and field == "price":
                continue
            if not isinstance(value, Decimal):
                problems.append(
                    IntentProblem(
                        ProblemCode.DECIMAL_NOT_STRING, field, f"must be a Decimal, got {value!r}"
                    )
                )
            else:
                problems += _decimal_value_problems(field, value)
        if time_in_force is not None and not isinstance(time_in_force, TimeInForce):
            problems.append(
                IntentProblem(
                    ProblemCode.INVALID_CHOICE,
                    "time_in_force",
                    f"must be a TimeInForce: {time_in_force!r}",
                )
            )
        if self.type in SUPPORTED_ORDER_TYPES:
            problems += _shape_problems(
                self.type,
                has_price=self.price is not None,
                has_time_in_force=self.time_in_force is not None,
            )
        if not is_valid_client_order_id(self.client_order_id):
            problems.append(
                IntentProblem(
                    ProblemCode.BAD_CLIENT_ORDER_ID,
                    "client_order_id",
                    f"must be 1-36 characters of [A-Za-z0-9_-], got {_show(self.client_order_id)}",
                )
            )
        if problems:
            raise IntentValidationError(problems)

    @property
    def idempotency_key(self) -> tuple[str, str, str]:
        """``(message_id, account, symbol)``: what ``client_order_id`` is derived from."""
        return (self.message_id, self.account, self.symbol)

    @classmethod
    def create(
        cls,
        *,
        message_id: str,
        account: str,
        symbol: str,
        side: Side,
        type: OrderType,
        quantity: Decimal,
        price: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        id_prefix: str = DEFAULT_PREFIX,
    ) -> OrderIntent:
        """Build an intent from typed values, deriving its client order id.

        Raises:
            IntentValidationError: a value breaks the rules (all problems listed).
        """
        keys = {"message_id": message_id, "account": account, "symbol": symbol}
        keys_valid = all(
            isinstance(value, str) and not _text_problems(field, value)
            for field, value in keys.items()
        )
        # With an invalid key the placeholder id is never used: __attrs_post_init__
        # raises, listing the key's problem together with any other.
        client_order_id = (
            derive_client_order_id(message_id, account, symbol, prefix=id_prefix)
            if keys_valid
            else _PLACEHOLDER_ID
        )
        return cls(
            message_id=message_id,
            account=account,
            symbol=symbol,
            side=side,
            type=type,
            quantity=quantity,
            price=price,
            time_in_force=time_in_force,
            client_order_id=client_order_id,
        )

    @classmethod
    def from_request(
        cls, request: Mapping[str, Any] | object, *, id_prefix: str = DEFAULT_PREFIX
    ) -> OrderIntent:
        """Validate a raw submission (decoded JSON, or a strategy's mapping).

        Args:
            request: Field name → JSON-like value (see the module docstring).
            id_prefix: Client order id prefix (see
                :func:`~daemon.orders.ids.derive_client_order_id`).

        Raises:
            IntentValidationError: with *every* problem found, in field order.
        """
        return cls(**_parse_request(request, id_prefix=id_prefix))

    def to_request(self) -> dict[str, str]:
        """The request this intent was built from (no nulls; decimals in plain notation).

        ``OrderIntent.from_request(intent.to_request())`` gives back an equal
        intent (with the same id prefix), so the store can keep this form.
        """
        request = {
            "message_id": self.message_id,
            "account": self.account,
            "symbol": self.symbol,
            "side": self.side.value,
            "type": self.type.value,
            "quantity": _format_decimal(self.quantity),
        }
        if self.price is not None:
            request["price"] = _format_decimal(self.price)
        if self.time_in_force is not None:
            request["time_in_force"] = self.time_in_force.value
        return request

    def to_new_order(self) -> NewOrder:
        """The venue command that places this intent, with its client order id."""
        return NewOrder(
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            client_order_id=self.client_order_id,
            quantity=self.quantity,
            price=self.price,
            time_in_force=self.time_in_force,
        )

    def differing_fields(self, other: OrderIntent) -> tuple[str, ...]:
        """Fields in which ``other`` differs from this intent (empty: the same order).

        A message id submitted again with a *different* order is a client bug;
        the entry can name the fields when it refuses it.
        """
        return tuple(
            field.name
            for field in attrs.fields(OrderIntent)
            if getattr(self, field.name) != getattr(other, field.name)
        )
