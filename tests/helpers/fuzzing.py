"""Shared hypothesis strategies and budgets for the parser fuzzers.

Every parser of outside data must answer hostile input with its documented
error path or a valid result, never another exception. These strategies
produce the structural extremes that broke parsers before: deep nesting,
huge integers, invalid UTF-8, duplicate keys, control characters, NaN.

Use ``@fuzz_settings()`` on a ``@given`` test: a bounded budget in the
suite, many more examples with ``pytest --long`` (see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = [
    "deep_json",
    "fuzz_settings",
    "hostile_bytes",
    "hostile_json_text",
    "hostile_text",
    "huge_int_text",
    "json_values",
]


_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "fuzz-ci", max_examples=150, deadline=None, suppress_health_check=_SUPPRESSED
)
settings.register_profile(
    "fuzz-long", max_examples=20_000, deadline=None, suppress_health_check=_SUPPRESSED
)


def fuzz_settings(ci_examples: int | None = None) -> settings:
    """The fuzzing budget: ``ci_examples`` (default 150) in the suite, 20,000 with ``--long``."""
    if os.environ.get("TRADINGD_FUZZ") == "long":
        return settings(settings.get_profile("fuzz-long"))
    base = settings.get_profile("fuzz-ci")
    if ci_examples is None:
        return settings(base)
    return settings(base, max_examples=ci_examples)


#: Text with control characters, escapes, surrogates-free unicode and digits of other scripts.
hostile_text = st.one_of(
    st.text(max_size=64),
    st.sampled_from(
        [
            "",
            "\n",
            "\r\n",
            "\x1b[31mred\x1b[0m",
            "\x00",
            "١٢٣",  # Arabic-Indic digits: int() accepts them
            "\uff11\uff12",  # full-width digits
            "9" * 5000,
            "-0",
            "1e999",
            "NaN",
            "Infinity",
            "\u202e",  # right-to-left override
            "a" * 10_000,
        ]
    ),
)


def huge_int_text(min_digits: int = 4301, max_digits: int = 20_000) -> st.SearchStrategy[str]:
    """Decimal integers beyond Python's int-string conversion limit."""
    return st.integers(min_digits, max_digits).map(lambda n: "9" * n)


def deep_json(min_depth: int = 50, max_depth: int = 100_000) -> st.SearchStrategy[str]:
    """Deeply nested JSON arrays/objects (closed or truncated)."""

    def build(depth: int, kind: str, closed: bool) -> str:
        if kind == "array":
            opened, close = "[" * depth, "]" * depth
        else:
            opened, close = '{"a":' * depth, "}" * depth
        return opened + ("1" + close if closed else "")

    return st.builds(
        build,
        st.integers(min_depth, max_depth),
        st.sampled_from(["array", "object"]),
        st.booleans(),
    )


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=20,
)


def _duplicate_keys(pair: tuple[str, Any]) -> str:
    key, value = pair
    return "{" + f"{json.dumps(key)}: 1, {json.dumps(key)}: {json.dumps(value)}" + "}"


#: JSON-ish text: valid documents, deep ones, huge numbers, constants, duplicates, garbage.
hostile_json_text = st.one_of(
    json_values.map(json.dumps),
    deep_json(),
    huge_int_text(),
    st.tuples(hostile_text, json_values).map(_duplicate_keys),
    st.sampled_from(["NaN", "[Infinity]", '{"a": -Infinity}', "", "{", "[1,]", '"\\ud800"']),
    st.text(max_size=200),
)

#: Bytes: invalid UTF-8, binary, and the hostile JSON above encoded.
hostile_bytes = st.one_of(
    st.binary(max_size=512),
    hostile_json_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b'{"a": "\xed\xa0\x80"}', b"\x00" * 64]),
)
