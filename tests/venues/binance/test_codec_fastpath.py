"""The stream codec's fast path for trade frames agrees with the general path.

``_fast_trade`` reads a well-formed trade frame without the :class:`Obj`
wrapper (the market-data hot path). It must accept only what the general
path accepts, with the same result, and leave everything else (``None``) to
the general path, which names the error. Frames are drawn around a valid trade:
fields dropped, added or replaced by hostile values, with and without the
combined envelope.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from daemon.errors import VenueDecodeError
from daemon.model import Trade
from daemon.venues.binance.codec import parse_stream_message
from daemon.venues.binance.codec.marketdata import _fast_trade, _general_event
from tests.helpers.fuzzing import fuzz_settings, hostile_text

from . import payloads as P

FIELDS = ("e", "E", "s", "t", "p", "q", "T", "m", "M")
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    hostile_text,
    st.sampled_from(
        ["0.001", "1_000", " 1.5 ", "1e40", "1e41", "1e-40", "-1e-41", "0", "-0.5", "trade"]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def frames(draw: st.DrawFn) -> Any:
    data: dict[str, Any] = dict(P.TRADE_EVENT)
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            del data[key]
        else:
            data[key] = draw(ODD_VALUES)
    if draw(st.booleans()):
        data[draw(st.sampled_from(["event", "stream", "data", "x"]))] = draw(ODD_VALUES)
    shape = draw(st.sampled_from(["raw", "combined", "odd envelope"]))
    if shape == "raw":
        return data
    if shape == "combined":
        return {"stream": "bnbbtc@trade", "data": data}
    return {"stream": draw(ODD_VALUES), "data": draw(st.one_of(ODD_VALUES, st.just(data)))}


def _general(obj: Any) -> Any:
    try:
        return _general_event(obj, "binance")
    except Exception as exc:  # what the general path raises: decode() turns it into the error
        return type(exc)


@fuzz_settings(ci_examples=600)
@given(frames())
@example({**P.TRADE_EVENT, "p": "1_000"})
@example({**P.TRADE_EVENT, "t": True})
@example({**P.TRADE_EVENT, "p": "1e41"})
@example({"stream": "x", "data": {**P.TRADE_EVENT}, "event": {}})
def test_the_fast_path_agrees_with_the_general_path(frame: Any) -> None:
    fast = _fast_trade(frame, "binance")
    if fast is not None:
        assert fast == _general(frame)


def test_the_fast_path_takes_the_common_frames() -> None:
    raw = _fast_trade(dict(P.TRADE_EVENT), "binance")
    combined = _fast_trade({"stream": "bnbbtc@trade", "data": dict(P.TRADE_EVENT)}, "binance")
    assert isinstance(raw, Trade) and raw == combined == _general_event(P.TRADE_EVENT, "binance")
    assert raw.quote_quantity == raw.price * raw.quantity
    # A number where the venue sends a string: the general path decides (it accepts it).
    as_number = {**P.TRADE_EVENT, "p": 0.001}
    assert _fast_trade(as_number, "binance") is None
    parsed = parse_stream_message(json.dumps(as_number))
    assert isinstance(parsed, Trade) and parsed.price == Decimal("0.001")


def test_a_hostile_trade_frame_still_gets_the_general_paths_error() -> None:
    for bad in ({**P.TRADE_EVENT, "p": "NaN"}, {**P.TRADE_EVENT, "t": 2**64}):
        assert _fast_trade(bad, "binance") is None
        try:
            parse_stream_message(json.dumps(bad))
        except VenueDecodeError as exc:
            assert "p" in str(exc) or "t" in str(exc)
        else:
            raise AssertionError(f"accepted {bad}")
