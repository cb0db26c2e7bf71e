"""The shared decoder of outside data: any failure is a DecodeError."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.decode import DecodeError, check_depth, json_loads, nesting_depth, toml_loads
from tests.helpers.fuzzing import (
    deep_json,
    fuzz_settings,
    hostile_bytes,
    hostile_json_text,
    hostile_text,
    json_values,
)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"[" * 100_000, "nests too deep"),
        ("[" * 100_000 + "]" * 100_000, "nests too deep"),
        (b"9" * 5000, "not valid JSON"),
        (b"\xff", "not valid UTF-8"),
        (b'{"a": NaN}', "NaN"),
        ("[-Infinity]", "Infinity"),
        ("{", "not valid JSON"),
    ],
)
def test_hostile_json_is_a_decode_error(doc: bytes | str, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as caught:
        json_loads(doc, what="request body")
    assert str(caught.value).startswith("request body")
    assert isinstance(caught.value, ValueError)  # callers handling ValueError keep working


def test_json_limits() -> None:
    with pytest.raises(DecodeError, match="longer than 8 bytes"):
        json_loads(b'{"a": 12345}', max_bytes=8)
    with pytest.raises(DecodeError, match="deeper than 2 levels"):
        json_loads("[[[1]]]", max_depth=2)
    assert json_loads("[[1]]", max_depth=2) == [[1]]
    assert json_loads("[[[1]]]", max_depth=None) == [[[1]]]
    assert json_loads('{"p": 1.10}', parse_float=Decimal) == {"p": Decimal("1.10")}
    assert json_loads("[NaN]", allow_constants=True)[0] != 0


def test_nesting_depth() -> None:
    assert nesting_depth(1) == 0
    assert nesting_depth([]) == 1
    assert nesting_depth({"a": [1, {"b": []}]}) == 4
    assert nesting_depth([[[[[]]]]], stop_above=2) == 3
    check_depth({"a": [1]}, 2)
    with pytest.raises(DecodeError, match="config nests deeper"):
        check_depth({"a": [[1]]}, 2, what="config")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = " + "[" * 5000, "nests too deep"),
        ("a = " + "{b = " * 3000, "nests too deep"),
        ("a = " + "9" * 5000, "a value could not be decoded"),
        ("a = 1\nb = =", r"syntax error: .*line 2"),
    ],
)
def test_hostile_toml_is_a_decode_error(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        toml_loads(text, what="tradingd.toml")


def test_toml_depth_limit() -> None:
    assert toml_loads("a = [[1]]", max_depth=3) == {"a": [[1]]}
    with pytest.raises(DecodeError, match="deeper than 2"):
        toml_loads("a = [[1]]", max_depth=2)


@fuzz_settings()
@given(st.one_of(hostile_bytes, hostile_json_text, deep_json()))
def test_json_loads_answers_anything_with_a_value_or_decode_error(doc: bytes | str) -> None:
    try:
        value = json_loads(doc, max_bytes=1 << 20)
    except DecodeError:
        return
    assert nesting_depth(value) <= 32


@fuzz_settings()
@given(json_values)
def test_json_loads_round_trips_valid_documents(value: object) -> None:
    text = json.dumps(value)
    if nesting_depth(value) <= 32:
        assert json_loads(text) == value


@fuzz_settings()
@given(
    st.one_of(hostile_text, hostile_json_text, st.text(alphabet="[]{}=\"'a1 .\n#", max_size=300))
)
def test_toml_loads_answers_anything_with_a_value_or_decode_error(text: str) -> None:
    for doc in (text, "a = " + text, "[t]\nk = " + text):
        try:
            toml_loads(doc)
        except DecodeError:
            pass
