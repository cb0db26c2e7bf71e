"""The generic strict TOML loader: types, ranges, policies, hooks, line numbers."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import tomlschema as ts
from daemon.errors import ConfigError


@attrs.frozen
class Inner:
    size: int = attrs.field(default=1, metadata={"ge": 1, "le": 10})
    ratio: float = attrs.field(default=0.5, metadata={"gt": 0, "le": 1})
    label: str = "x"


@attrs.frozen
class Named:
    url: str
    weight: int = 1


@attrs.frozen
class Token:
    """A custom type that only a hook knows how to read."""

    name: str


@attrs.frozen
class Checked:
    """An attrs class that validates itself (a constructor error)."""

    low: int = 0
    high: int = 10

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must be <= high")


@attrs.frozen
class SelfTyped:
    kind: str
    count: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SelfTyped:
        if "kind" not in data:
            raise ValueError("needs a kind")
        return cls(**data)


_NAMES = ts.EntryNames(re.compile(r"[a-z]{1,8}"), "names are 1-8 letters a-z")


@attrs.frozen
class Doc:
    flag: bool = False
    count: int = attrs.field(default=3, metadata={"ge": 0})
    rate: float = 1.0
    name: str = "doc"
    where: Path = Path("/tmp")
    price: Decimal = Decimal("1.5")
    mode: Literal["a", "b"] = "a"
    maybe: int | None = None
    tags: tuple[str, ...] = ()
    inner: Inner = attrs.field(factory=Inner)
    items: tuple[Inner, ...] = ()
    named: Mapping[str, Named] = attrs.field(
        factory=lambda: types.MappingProxyType({}), metadata={ts.ENTRY_NAMES: _NAMES}
    )
    amounts: Mapping[str, Decimal] = attrs.field(factory=lambda: types.MappingProxyType({}))
    token: Token | None = None
    checked: Checked = attrs.field(factory=Checked)
    selfs: tuple[SelfTyped, ...] = ()
    origin: str = attrs.field(default="", metadata={ts.INTERNAL: True})


def _token(raw: Any, path: tuple[str, ...], report: ts.Report) -> tuple[bool, Any]:
    if isinstance(raw, str) and raw.startswith("tok:"):
        return True, Token(raw[4:])
    report(path, "expected 'tok:NAME'")
    return False, None


_HOOKS: dict[type[Any], ts.Hook] = {
    Token: _token,
    SelfTyped: ts.from_mapping_hook(SelfTyped, SelfTyped.from_mapping),
}
LENIENT = ts.Schema(hooks=_HOOKS, fallback_to_default=True, constructor_errors=(ValueError,))
STRICT = ts.Schema(hooks=_HOOKS, constructor_errors=(ValueError, TypeError))


def load(text: str, schema: ts.Schema = STRICT) -> tuple[Any, list[str]]:
    report = ts.Problems("d.toml", ts.locate_keys(text))
    value = schema.build(Doc, ts.parse(text, source="d.toml"), report)
    return value, report.problems


def problems(text: str, schema: ts.Schema = STRICT) -> list[str]:
    value, found = load(text, schema)
    assert found, "expected problems"
    if schema is STRICT:
        assert value is ts.INVALID
    return found


# --------------------------------------------------------------------------- values


def test_full_document_loads() -> None:
    text = """\
flag = true
count = 0
rate = 2
where = "rel/dir"
price = "0.00000001"
mode = "b"
maybe = 7
tags = ["x", "y"]
token = "tok:abc"
amounts = { BTC = "1.25", USDT = 100 }

[inner]
size = 10
ratio = 1

[[items]]
label = "first"

[[items]]
size = 2

[named.alpha]
url = "http://a"

[[selfs]]
kind = "k"
count = 2
"""
    doc, found = load(text)
    assert found == []
    assert doc == Doc(
        flag=True,
        count=0,
        rate=2.0,
        where=Path("rel/dir"),
        price=Decimal("0.00000001"),
        mode="b",
        maybe=7,
        tags=("x", "y"),
        inner=Inner(size=10, ratio=1.0),
        items=(Inner(label="first"), Inner(size=2)),
        named={"alpha": Named(url="http://a")},
        amounts={"BTC": Decimal("1.25"), "USDT": Decimal(100)},
        token=Token("abc"),
        selfs=(SelfTyped(kind="k", count=2),),
    )
    assert isinstance(doc.rate, float)
    assert isinstance(doc.named, types.MappingProxyType)
    assert load("")[0] == Doc()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flag = 1", "d.toml:1: flag: expected true or false, got an integer (1)"),
        ('count = "5"', "d.toml:1: count: expected an integer, got a string ('5')"),
        ("count = 1.5", "d.toml:1: count: expected an integer, got a float (1.5)"),
        ("count = -1", "d.toml:1: count: must be >= 0, got -1"),
        ("rate = true", "d.toml:1: rate: expected a number, got a boolean (true)"),
        ("rate = inf", "d.toml:1: rate: must be a finite number"),
        ("name = []", "d.toml:1: name: expected a string, got an array"),
        ('where = ""', "d.toml:1: where: expected a non-empty path string, got a string ('')"),
        ("price = 0.1", 'd.toml:1: price: write decimals as strings (e.g. "0.1"), not floats'),
        ('price = "abc"', "d.toml:1: price: not a decimal number: 'abc'"),
        ('price = "NaN"', "d.toml:1: price: expected a decimal string such as \"0.01\", got 'NaN'"),
        ('mode = "c"', "d.toml:1: mode: must be one of 'a', 'b', got 'c'"),
        ("mode = 1", "d.toml:1: mode: must be one of 'a', 'b', got 1"),
        ('maybe = "1"', "d.toml:1: maybe: expected an integer, got a string ('1')"),
        ('tags = "x"', "d.toml:1: tags: expected an array, got a string ('x')"),
        ('tags = ["x", 2]', "d.toml:1: tags.1: expected a string, got an integer (2)"),
        ("items = 3", "d.toml:1: items: expected an array of tables, got an integer (3)"),
        ("inner = 3", "d.toml:1: inner: expected a table, got an integer (3)"),
        ("named = 3", "d.toml:1: named: expected a table of named entries, got an integer (3)"),
        ("amounts = 3", "d.toml:1: amounts: expected a table, got an integer (3)"),
        ("amounts = { A = 0.5 }", 'd.toml:1: amounts.A: write decimals as strings (e.g. "0.5")'),
        ('token = "abc"', "d.toml:1: token: expected 'tok:NAME'"),
        ("origin = 'x'", "d.toml:1: origin: unknown key"),
        ("[inner]\nsize = 0", "d.toml:2: inner.size: must be >= 1, got 0"),
        ("[inner]\nratio = 0", "d.toml:2: inner.ratio: must be > 0, got 0"),
        ("[inner]\nsize = 11", "d.toml:2: inner.size: must be <= 10, got 11"),
        ("[inner]\nsise = 2", "d.toml:2: inner.sise: unknown key (did you mean 'size'?)"),
        ("[named.Bad]\nurl = 'u'", "d.toml:1: named.Bad: names are 1-8 letters a-z"),
        ("[named.ok]\nweight = 2", "d.toml:1: named.ok.url: required key is missing"),
        ("[checked]\nlow = 11", "d.toml:1: checked: low must be <= high"),
        ("[[selfs]]\ncont = 1", "d.toml:2: selfs.0.cont: unknown key (did you mean 'count'?)"),
        ("[[selfs]]\ncount = 1", "d.toml:1: selfs.0: needs a kind"),
        ("selfs = [1]", "d.toml:1: selfs.0: expected a table, got an integer (1)"),
    ],
)
def test_each_problem_is_reported_with_line_key_and_message(text: str, expected: str) -> None:
    (problem,) = problems(text)
    assert problem.startswith(expected), problem


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    text = """\
flag = "yes"
colour = 1

[inner]
size = 0
label = 3

[[items]]
size = 2

[[items]]
size = 20
"""
    assert problems(text) == [
        "d.toml:1: flag: expected true or false, got a string ('yes')",
        "d.toml:2: colour: unknown key",
        "d.toml:5: inner.size: must be >= 1, got 0",
        "d.toml:6: inner.label: expected a string, got an integer (3)",
        "d.toml:12: items.1.size: must be <= 10, got 20",
    ]


# --------------------------------------------------------------------------- policies


def test_strict_policy_makes_the_table_invalid() -> None:
    report = ts.Problems("s")
    assert STRICT.build(Inner, {"size": 0, "label": "kept?"}, report) is ts.INVALID
    assert report.problems == ["s: size: must be >= 1, got 0"]


def test_fallback_policy_uses_the_default_and_keeps_the_rest() -> None:
    report = ts.Problems("s")
    built = LENIENT.build(Inner, {"size": 0, "label": "kept", "bogus": 1}, report)
    assert built == Inner(size=1, label="kept")
    assert len(report.problems) == 2


def test_fallback_policy_still_invalidates_a_missing_required_key_or_a_non_table() -> None:
    report = ts.Problems("s")
    assert LENIENT.build(Named, {"weight": 2}, report) is ts.INVALID
    assert LENIENT.build(Named, {"url": 3}, report) is ts.INVALID
    assert LENIENT.build(Named, [], report) is ts.INVALID
    assert report.problems == [
        "s: url: required key is missing",
        "s: url: expected a string, got an integer (3)",
        "s: (top level): expected a table, got an array",
    ]


def test_fallback_policy_drops_bad_named_entries_but_strict_rejects_the_table() -> None:
    text = '[named.good]\nurl = "u"\n[named.bad]\nweight = 1\n[named.UPPER]\nurl = "u"\n'
    doc, found = load(text, LENIENT)
    assert dict(doc.named) == {"good": Named(url="u")}
    assert found == [
        "d.toml:3: named.bad.url: required key is missing",
        "d.toml:5: named.UPPER: names are 1-8 letters a-z",
    ]
    assert load(text, STRICT) == (ts.INVALID, found)


def test_constructor_errors_propagate_unless_listed() -> None:
    with pytest.raises(ValueError, match="low must be <= high"):
        ts.Schema().build(Checked, {"low": 5, "high": 1}, ts.Problems("s"))
    report = ts.Problems("s", {("checked",): 4})
    assert STRICT.build(Checked, {"low": 5, "high": 1}, report, ("checked",)) is ts.INVALID
    assert report.problems == ["s:4: checked: low must be <= high"]


def test_problems_raise_one_config_error_and_name_the_top_level() -> None:
    report = ts.Problems("f.toml")
    report.raise_if_any()
    report((), "empty")
    report(("a", "b"), "bad")
    with pytest.raises(ConfigError) as info:
        report.raise_if_any()
    assert list(info.value.problems) == ["f.toml: (top level): empty", "f.toml: a.b: bad"]


def test_syntax_error_names_the_source() -> None:
    with pytest.raises(ConfigError) as info:
        ts.parse("a = [", source="x.toml")
    (problem,) = info.value.problems
    assert problem.startswith("x.toml: TOML syntax error:")


# --------------------------------------------------------------------------- line numbers


def test_locate_keys_handles_quoted_dotted_inline_multiline_and_arrays() -> None:
    text = """\
top = 1
"quoted key" = 2
a.b = 3
'lit'.c = 4
table = { x = 1, y = { z = 2 } }
long = \"\"\"
fake = 1
\"\"\"
after = 5

[venues."my venue"]
url = "u"

[[symbols]]
tick = "1"

[symbols.filters]
min = 1

[[symbols]]
tick = "2"

[[symbols.levels]]
px = 1

[[symbols.levels]]
px = 2
"""
    lines = ts.locate_keys(text)
    assert lines[("top",)] == 1
    assert lines[("quoted key",)] == 2
    assert lines[("a", "b")] == 3
    assert lines[("lit", "c")] == 4
    assert lines[("table", "x")] == 5 and lines[("table", "y")] == 5
    assert ("fake",) not in lines
    assert lines[("after",)] == 9
    assert lines[("venues", "my venue", "url")] == 12
    assert lines[("symbols", "0")] == 14
    assert lines[("symbols", "0", "tick")] == 15
    assert lines[("symbols", "0", "filters", "min")] == 18
    assert lines[("symbols", "1", "tick")] == 21
    assert lines[("symbols", "1", "levels", "0", "px")] == 24
    assert lines[("symbols", "1", "levels", "1", "px")] == 27


def test_line_for_falls_back_to_the_enclosing_table() -> None:
    lines = {("a",): 3, ("a", "b"): 4}
    assert ts.line_for(lines, ("a", "b", "c")) == 4
    assert ts.line_for(lines, ("a", "z")) == 3
    assert ts.line_for(lines, ("q",)) is None
    assert ts.line_for(lines, ()) is None


# --------------------------------------------------------------------------- properties

_KEY_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


def _inner_tables() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "size": st.integers(1, 10),
            "ratio": st.floats(0, 1, exclude_min=True),
            "label": _TEXT,
        },
    )


_DOCS = st.fixed_dictionaries(
    {},
    optional={
        "flag": st.booleans(),
        "count": st.integers(0, 2**62),
        "rate": st.floats(allow_nan=False, allow_infinity=False),
        "name": _TEXT,
        "where": _TEXT.filter(bool),
        "price": st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
        "mode": st.sampled_from(["a", "b"]),
        "maybe": st.integers(-5, 5),
        "tags": st.lists(_TEXT, max_size=3),
        "inner": _inner_tables(),
        "items": st.lists(_inner_tables(), max_size=3),
        "named": st.dictionaries(
            st.from_regex(_NAMES.pattern, fullmatch=True),
            st.fixed_dictionaries({"url": _TEXT}, optional={"weight": st.integers(-3, 3)}),
            max_size=3,
        ),
    },
)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic strings (no surrogate escapes: not ASCII).
        return json.dumps(value, ensure_ascii=False)
    assert isinstance(value, list)
    return "[" + ", ".join(_value(v) for v in value) + "]"


def _to_toml(
    doc: dict[str, Any], extra: dict[tuple[str, ...], str]
) -> tuple[str, dict[tuple[str, ...], int]]:
    """Render ``doc`` as TOML with every ``extra`` (table path -> unknown key) added.

    Returns the text and the line of each extra key, to check reported lines.
    """
    out: list[str] = []
    where: dict[tuple[str, ...], int] = {}

    def table(path: tuple[str, ...], body: dict[str, Any]) -> None:
        for key, value in body.items():
            out.append(f"{key} = {_value(value)}")
        if path in extra:
            out.append(f"{extra[path]} = 1")
            where[(*path, extra[path])] = len(out)

    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in doc.items() if k == "items"}
    table((), {k: v for k, v in doc.items() if k not in tables and k not in arrays})
    for name, body in tables.items():
        if name == "named":
            for entry, entry_body in body.items():
                out.append(f"[named.{entry}]")
                table(("named", entry), entry_body)
        else:
            out.append(f"[{name}]")
            table((name,), body)
    for index, body in enumerate(arrays.get("items", [])):
        out.append("[[items]]")
        table(("items", str(index)), body)
    return "\n".join(out) + "\n", where


@settings(max_examples=150, deadline=None)
@given(_DOCS)
def test_valid_documents_always_load(doc: dict[str, Any]) -> None:
    text, _ = _to_toml(doc, {})
    for schema in (STRICT, LENIENT):
        built, found = load(text, schema)
        assert found == []
        assert isinstance(built, Doc)
    assert built.count == doc.get("count", 3)
    assert built.price == Decimal(doc.get("price", "1.5"))
    assert len(built.items) == len(doc.get("items", []))
    assert set(built.named) == set(doc.get("named", {}))


def _not_in(names: set[str]) -> Callable[[str], bool]:
    return lambda key: key not in names


@settings(max_examples=150, deadline=None)
@given(_DOCS, st.data())
def test_unknown_keys_are_always_reported_at_their_line(doc: dict[str, Any], data: Any) -> None:
    tables: list[tuple[str, ...]] = [()]
    tables += [(name,) for name in ("inner",) if name in doc]
    tables += [("named", entry) for entry in doc.get("named", {})]
    tables += [("items", str(i)) for i in range(len(doc.get("items", [])))]
    known = {
        (): {f.name for f in attrs.fields(Doc) if not f.metadata.get(ts.INTERNAL)},
        "inner": {f.name for f in attrs.fields(Inner)},
        "named": {f.name for f in attrs.fields(Named)},
        "items": {f.name for f in attrs.fields(Inner)},
    }
    chosen = data.draw(st.lists(st.sampled_from(tables), min_size=1, unique=True))
    extra: dict[tuple[str, ...], str] = {}
    for path in chosen:
        names: set[str] = known[path[0] if path else ()]
        extra[path] = data.draw(_KEY_NAMES.filter(_not_in(names)))
    text, where = _to_toml(doc, extra)
    for schema in (STRICT, LENIENT):
        built, found = load(text, schema)
        reported = {
            p.split(": ")[1]: int(p.split(": ")[0].rsplit(":", 1)[1])
            for p in found
            if "unknown key" in p
        }
        assert reported == {".".join(path): line for path, line in where.items()}
        assert len(found) == len(extra)
        assert (built is ts.INVALID) is (schema is STRICT)
