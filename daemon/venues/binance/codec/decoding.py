"""Strict reading of the venue's JSON: the hostile-input limits and the typed readers.

The venue is an untrusted peer. Every parser of the codec (REST bodies in
:mod:`.general`, :mod:`.marketdata` and :mod:`.orders`, stream frames in
:mod:`.marketdata`; a WebSocket API codec would sit beside them) decodes
through :func:`decode`, which answers *any* input with the value its
``build`` function makes or a :class:`~daemon.errors.VenueDecodeError`
carrying the raw payload, within the limits below (frame and body size, body
depth, decimal length and exponent, 64-bit integers). ``build`` reads the
loaded JSON with :class:`Obj` (strict, typed field reads),
:func:`to_decimal`, :func:`price_levels`, :func:`as_list` and
:func:`str_list`, all of which raise :class:`ShapeError` on a shape that is
not the documented one; :func:`decode` turns that into the decode error.

Numbers: prices and quantities are parsed from strings into ``Decimal``; JSON
numbers with a fraction are read as ``Decimal`` too, so no float ever appears.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, TypeVar

from daemon.decode import DecodeError, json_loads
from daemon.errors import VenueDecodeError
from daemon.model.marketdata import Level

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BODY_BYTES",
    "MAX_BODY_DEPTH",
    "MAX_DECIMAL_CHARS",
    "MAX_DECIMAL_EXPONENT",
    "MAX_FRAME_BYTES",
    "Obj",
    "ShapeError",
    "as_list",
    "bad_shape",
    "clean",
    "decode",
    "price_levels",
    "show",
    "str_list",
    "to_decimal",
]

_RAW_PREVIEW_CHARS = 120
_MESSAGE_CHARS = 300

# --------------------------------------------------------------------------- hostile-input limits
# The venue is an untrusted peer: everything it sends is decoded under these
# limits, and any failure of decoding (deep nesting, numbers beyond Python's
# int-string limit, bad UTF-8, odd shapes) is a VenueDecodeError, never
# another exception (see :func:`decode`).

#: Longest stream frame accepted (also the WebSocket's ``max_message_size``);
#: Binance's frames are a few hundred bytes, a 5000-level depth diff ~200 KB.
MAX_FRAME_BYTES = 1 << 20
#: Longest REST body decoded (``exchangeInfo`` for every symbol is a few MB).
MAX_BODY_BYTES = 64 << 20
#: Deepest nesting of a REST body (exchangeInfo nests 5 levels). Stream frames
#: are not walked (hot path): their schema refuses nested shapes, and nesting
#: beyond the interpreter's limit is caught as a RecursionError.
MAX_BODY_DEPTH = 16
#: Longest decimal accepted, as a JSON number or a string (Binance: ~20 chars).
MAX_DECIMAL_CHARS = 64
#: A decimal's adjusted exponent must lie within +-this (1e40 or 1e-40 at most):
#: ``1e999999`` is a valid JSON number but no price, and would blow up
#: arithmetic and formatting downstream.
MAX_DECIMAL_EXPONENT = 40
#: Integers (ids, times, counts) must fit a signed 64-bit column.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def clean(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """``text`` with whitespace collapsed, cut to ``limit`` characters (``…`` marks a cut)."""
    text = " ".join(text[: 4 * limit].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


class ShapeError(Exception):
    """The JSON did not have the documented shape (:func:`decode` makes it a VenueDecodeError)."""


def bad_shape(message: str) -> NoReturn:
    """Raise :class:`ShapeError`: the reader's way out of a ``build`` function."""
    raise ShapeError(message)


def _json_decimal(text: str) -> Decimal:
    """``parse_float`` of venue JSON: a fractional number as ``Decimal``, bounded."""
    if len(text) > MAX_DECIMAL_CHARS:
        raise ValueError(f"a number of {len(text)} characters")
    return Decimal(text)


def _preview(raw: bytes | str) -> str:
    head = raw[: 4 * _RAW_PREVIEW_CHARS]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes | bytearray) else str(head)
    text = " ".join(text.split())
    if len(text) <= _RAW_PREVIEW_CHARS and len(head) == len(raw):
        return text
    return text[: _RAW_PREVIEW_CHARS - 1] + "…"


def decode(
    payload: bytes | str,
    what: str,
    venue: str,
    build: Callable[[Any], T],
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int | None = MAX_BODY_DEPTH,
) -> T:
    """Load JSON, hand it to ``build``; *any* failure → VenueDecodeError with the raw.

    Decoding goes through :func:`daemon.decode.json_loads`, which turns every
    exception of the JSON parser (``RecursionError`` included) into a
    ``DecodeError``; whatever ``build`` raises on a hostile shape (``KeyError``,
    ``ArithmeticError`` from ``Decimal``, ``OverflowError``, a model's
    validator…) is caught as well. Only cancellation and the like
    (``BaseException``) pass through.
    """
    try:
        obj = json_loads(
            payload,
            what=what,
            max_bytes=max_bytes,
            max_depth=max_depth,
            parse_float=_json_decimal,
        )
    except DecodeError as exc:
        raise VenueDecodeError(
            f"{venue}: {what}: not JSON ({clean(str(exc), _RAW_PREVIEW_CHARS)}); "
            f"payload: {_preview(payload)!r}",
            raw=payload,
            venue=venue,
        ) from None
    try:
        return build(obj)
    except Exception as exc:
        detail = str(exc) if isinstance(exc, ShapeError | ValueError) else type(exc).__name__
        raise VenueDecodeError(
            f"{venue}: {what}: {clean(detail, _RAW_PREVIEW_CHARS)}; payload: {_preview(payload)!r}",
            raw=payload,
            venue=venue,
        ) from None


def show(value: object) -> str:
    """A short, safe description of a value for an error message (no deep repr)."""
    if value is None or isinstance(value, bool | Decimal):
        return repr(value)
    if isinstance(value, int):
        return (
            repr(value)
            if -(10**30) < value < 10**30
            else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:39] + "…")
    if isinstance(value, list | dict):
        return f"a {'list' if isinstance(value, list) else 'object'} of {len(value)}"
    return type(value).__name__


class Obj:
    """Strict, typed reads from one JSON object (raises :class:`ShapeError`)."""

    __slots__ = ("_d", "_what")

    def __init__(self, obj: object, what: str) -> None:
        if not isinstance(obj, dict):
            bad_shape(f"{what}: expected an object, got {type(obj).__name__}")
        self._d: dict[str, Any] = obj
        self._what = what

    def has(self, key: str) -> bool:
        return self._d.get(key) is not None

    def raw(self, key: str) -> Any:
        if key not in self._d:
            bad_shape(f"{self._what}: missing field {key!r}")
        return self._d[key]

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            bad_shape(f"{self._what}.{key}: expected a string, got {show(value)}")
        return value

    def integer(self, key: str) -> int:
        value = self.raw(key)
        if not isinstance(value, int) or isinstance(value, bool):
            bad_shape(f"{self._what}.{key}: expected an integer, got {show(value)}")
        if not INT64_MIN <= value <= INT64_MAX:
            bad_shape(f"{self._what}.{key}: {show(value)} does not fit 64 bits")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            bad_shape(f"{self._what}.{key}: expected a boolean, got {show(value)}")
        return value

    def dec(self, key: str) -> Decimal:
        return to_decimal(self.raw(key), f"{self._what}.{key}")

    def items(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            bad_shape(f"{self._what}.{key}: expected a list, got {type(value).__name__}")
        return value

    def opt_str(self, key: str) -> str | None:
        return self.text(key) if self.has(key) else None

    def opt_int(self, key: str) -> int | None:
        return self.integer(key) if self.has(key) else None

    def opt_bool(self, key: str) -> bool | None:
        return self.flag(key) if self.has(key) else None

    def opt_dec(self, key: str) -> Decimal | None:
        return self.dec(key) if self.has(key) else None

    def enum(self, key: str, kind: type[E]) -> E:
        value = self.text(key)
        try:
            return kind(value)
        except ValueError:
            bad_shape(f"{self._what}.{key}: unknown {kind.__name__} {show(value)}")

    def opt_enum(self, key: str, kind: type[E]) -> E | None:
        return self.enum(key, kind) if self.has(key) else None


def to_decimal(value: object, where: str) -> Decimal:
    """A finite decimal from a string, an integer or a (bounded) JSON number.

    Refused: booleans, other types, more than :data:`MAX_DECIMAL_CHARS`
    characters, NaN/infinity, and magnitudes beyond 1e±:data:`MAX_DECIMAL_EXPONENT`
    (``"1e999999"`` parses, but no venue quantity is like it).
    """
    if isinstance(value, bool):
        bad_shape(f"{where}: expected a decimal string, got {show(value)}")
    if isinstance(value, str):
        if len(value) > MAX_DECIMAL_CHARS:
            bad_shape(f"{where}: a decimal of {len(value)} characters")
        try:
            result = Decimal(value)
        except (InvalidOperation, ValueError):
            bad_shape(f"{where}: not a decimal: {show(value)}")
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            bad_shape(f"{where}: {show(value)} is out of range")
        result = Decimal(value)
    elif isinstance(value, Decimal):
        result = value
    else:
        bad_shape(f"{where}: expected a finite decimal string, got {show(value)}")
    if not result.is_finite():
        bad_shape(f"{where}: expected a finite decimal string, got {show(value)}")
    if not -MAX_DECIMAL_EXPONENT <= result.adjusted() <= MAX_DECIMAL_EXPONENT:
        bad_shape(f"{where}: {show(value)} is out of range")
    return result


def price_levels(value: object, where: str) -> tuple[Level, ...]:
    if not isinstance(value, list):
        bad_shape(f"{where}: expected a list of [price, qty]")
    levels = []
    for i, level in enumerate(value):
        if not isinstance(level, list) or len(level) != 2:
            bad_shape(f"{where}[{i}]: expected [price, qty], got {show(level)}")
        levels.append(
            (to_decimal(level[0], f"{where}[{i}]"), to_decimal(level[1], f"{where}[{i}]"))
        )
    return tuple(levels)


def as_list(obj: object, what: str) -> list[Any]:
    if not isinstance(obj, list):
        bad_shape(f"{what}: expected a list, got {type(obj).__name__}")
    return obj


def str_list(items: list[Any], where: str) -> list[str]:
    for item in items:
        if not isinstance(item, str):
            bad_shape(f"{where}: expected strings, got {show(item)}")
    return items
