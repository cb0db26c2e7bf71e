"""Strict loading of TOML documents into frozen attrs classes.

Why one module: the daemon's config and the simulator's config must be strict
in the same way (a typo silently ignored in a trading config is an incident
waiting for its day), and two hand-made loaders drift apart. The schema *is*
the attrs classes; this module walks them and the parsed TOML together:

* unknown keys are errors, with a "did you mean" hint;
* wrong types are errors (``"5"`` is not an integer; ``5`` is accepted for a
  float; a :class:`~decimal.Decimal` is written as a string or an integer,
  never as a float, which has already lost digits);
* ranges come from field metadata (``ge``, ``gt``, ``le``; a key declared
  with :func:`opt` has them), required keys are the fields without a
  default, ``Literal[...]`` lists the choices;
* every problem is reported at once as ``FILE:LINE: dotted.key: message``, the
  line found by one shared line scanner (:func:`locate_keys`).

Supported schema types: ``bool``, ``int``, ``float``, ``str``, ``Path``,
``Decimal``, ``Literal[...]``, ``X | None``, ``tuple[X, ...]`` (arrays,
including ``[[arrays.of.tables]]``), ``Mapping[str, X]`` (tables whose entries
are named by the user, optionally restricted by an :class:`EntryNames` pattern
in the field's metadata), nested attrs classes, ``Any`` (a free-form value
passed through unchecked, e.g. a plug-in's own options table:
``Mapping[str, Any]``), and any type given a :data:`Hook` (e.g. the daemon's
secret references).

A field whose TOML key cannot be a Python name (``class``) names its key in
its metadata under :data:`TOML_KEY`; messages and :func:`toml_key` use it.

Two policies differ between users and are options of :class:`Schema`:

* ``fallback_to_default``: after reporting a bad value, use the key's default,
  so that cross-key checks still run on a complete value (the daemon); or treat
  any bad key as making its whole table invalid (the simulator). A missing
  required key or a non-table always makes the table invalid.
* ``constructor_errors``: exceptions raised by an attrs class's constructor
  (``__attrs_post_init__`` validation) that are reported as a problem on the
  table's path instead of propagating.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import attrs

from daemon.decode import DEFAULT_MAX_DEPTH, DecodeError, read_regular_file, toml_loads
from daemon.errors import ConfigError

__all__ = [
    "ENTRY_NAMES",
    "INTERNAL",
    "INVALID",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "TOML_KEY",
    "EntryNames",
    "Hook",
    "Invalid",
    "Problems",
    "Report",
    "Schema",
    "freeze",
    "from_mapping_hook",
    "line_for",
    "locate_keys",
    "opt",
    "parse",
    "read_text",
    "toml_key",
    "toml_type",
]

T = TypeVar("T")

#: Receives a key path and a message; collects one problem.
Report = Callable[[tuple[str, ...], str], None]
#: Converts one raw TOML value of a custom type: ``(ok, value)``; reports when not ok.
Hook = Callable[[Any, tuple[str, ...], Report], tuple[bool, Any]]

#: Field metadata key: an :class:`EntryNames` restricting the names of a ``Mapping`` field.
ENTRY_NAMES: Final = "entry_names"
#: Field metadata key: a true value hides the field from TOML (set by code, not by the file).
INTERNAL: Final = "internal"
#: Field metadata key: the field's TOML key when it differs from the attribute name
#: (a Python keyword such as ``class`` cannot be an attribute).
TOML_KEY: Final = "toml_key"


def opt(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    **metadata: object,
) -> Any:
    """Declare a key: its default, one line of help and its range.

    The range (``ge``, ``gt``, ``le``) is checked by :class:`Schema`;
    ``metadata`` adds a user's own entries (the daemon's reload kind).
    """
    return attrs.field(
        default=default, metadata={"help": help, "ge": ge, "gt": gt, "le": le, **metadata}
    )


def toml_key(field: attrs.Attribute[Any]) -> str:
    """The TOML key of an attrs field (its :data:`TOML_KEY`, else its name)."""
    key = field.metadata.get(TOML_KEY)
    return key if isinstance(key, str) else field.name


def freeze(value: Any) -> Any:
    """A read-only deep copy of a parsed TOML value: tables become read-only
    mappings, arrays tuples; scalars (including dates and times) are immutable already.

    Why: free-form values (``Any`` fields) end up inside frozen config objects
    that are shared, e.g. with a plug-in that is restarted after a crash; a
    mutation by one holder must not change what the next one is given.
    """
    if isinstance(value, dict):
        return types.MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


@attrs.frozen
class EntryNames:
    """Which names the entries of a named-table field (``[venues.NAME]``) may have."""

    pattern: re.Pattern[str]
    #: Said when a name does not match, e.g. "names are 1-32 characters of a-z ...".
    message: str


@typing.final
class Invalid:
    """Marks a value that could not be built (its problems were reported)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = Invalid()


# --------------------------------------------------------------------------- reporting


class Problems:
    """Collects problems as ``FILE:LINE: dotted.key: message``; call it as a :data:`Report`.

    Args:
        source: the file name (or ``<string>``) every problem starts with.
        lines: key paths to line numbers, from :func:`locate_keys`; a path not
            found is located by its nearest enclosing table, else by no line.
    """

    def __init__(self, source: str, lines: Mapping[tuple[str, ...], int] | None = None) -> None:
        self.source = source
        self.lines: Mapping[tuple[str, ...], int] = lines or {}
        self.problems: list[str] = []
        #: The key path of every problem, in order.
        self.paths: list[tuple[str, ...]] = []

    def __call__(self, path: tuple[str, ...], message: str) -> None:
        self.paths.append(path)
        line = line_for(self.lines, path)
        where = f"{self.source}:{line}" if line else self.source
        key = ".".join(path) if path else "(top level)"
        self.problems.append(f"{where}: {key}: {message}")

    def raise_if_any(self) -> None:
        """Raise :class:`ConfigError` with every problem collected, if there is one."""
        if self.problems:
            raise ConfigError(list(self.problems))


#: Nesting depth allowed in a TOML document (tables, arrays and inline tables
#: together); tradingd's own configs nest a handful of levels.
MAX_DEPTH: Final = DEFAULT_MAX_DEPTH
#: Largest config file read: far above any real one, and a bound on what a
#: reload reads (``/dev/zero`` behind a symlink must not fill the memory).
MAX_FILE_BYTES: Final = 4 * 1024 * 1024


def read_text(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of a config file; every failure is a :class:`ConfigError` naming the file.

    Refused: a missing or unreadable file, anything but a regular file (a FIFO
    would block a reload forever, a device never ends), a file longer than
    ``max_bytes``, text that is not UTF-8.
    """
    source = os.fspath(path)
    try:
        data = read_regular_file(source, max_bytes=max_bytes)
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError([f"{source}: cannot read: {_os_reason(exc)}"]) from None
    if len(data) > max_bytes:
        raise ConfigError([f"{source}: longer than {max_bytes} bytes; not a config file?"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{source}:{line}: not valid UTF-8 (byte {exc.start})"]) from None


def _os_reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def parse(text: str, *, source: str) -> dict[str, Any]:
    """Parse TOML text; any failure becomes a :class:`ConfigError` naming ``source``.

    Syntax errors, nesting deeper than :data:`MAX_DEPTH` (or than the parser's
    recursion can go) and integers beyond Python's int-string limit are all
    refused the same way, as ``FILE:LINE: message`` when the line is known.
    """
    try:
        data = toml_loads(text, what="TOML", max_depth=MAX_DEPTH)
    except DecodeError as exc:
        message = str(exc)
        line = _syntax_line(message)
        if line is None:
            huge = _huge_int_line(text)
            if huge is not None and "integer string conversion" in message:
                limit = sys.get_int_max_str_digits()
                line, message = huge, f"TOML: an integer has more than {limit} digits"
            else:
                line = problem_line(text)
        where = f"{source}:{line}" if line else source
        raise ConfigError([f"{where}: {message}"]) from None
    assert isinstance(data, dict)
    return data


_AT_LINE: Final = re.compile(r"\(at line (\d+), column \d+\)")


def _syntax_line(message: str) -> int | None:
    match = _AT_LINE.search(message)
    return int(match.group(1)) if match else None


def problem_line(text: str, *, max_depth: int = MAX_DEPTH) -> int | None:
    """The line of a problem the parser gives no line for (best effort, else None).

    Either the first line where the nesting goes deeper than ``max_depth``, or
    the first decimal integer longer than Python's int-string limit.
    """
    return _deep_line(text, max_depth) or _huge_int_line(text)


def _huge_int_line(text: str) -> int | None:
    limit = sys.get_int_max_str_digits()
    if not limit:
        return None
    # A run of more digits than the limit ("_" separators allowed, as in TOML);
    # runs are found once each (a bounded repeat at every digit was quadratic).
    for run in _DIGITS.finditer(text):
        if len(run.group()) > limit and len(run.group().replace("_", "")) > limit:
            return text.count("\n", 0, run.start()) + 1
    return None


_DIGITS: Final = re.compile(r"[0-9][0-9_]*")


def _deep_line(text: str, max_depth: int) -> int | None:
    """The first line where tables, dotted keys and brackets nest deeper than ``max_depth``.

    A character scanner, not a parser: strings (all four kinds) and comments
    are skipped; a ``[`` at the start of a line outside any value is a table
    header, whose dotted parts count as levels, as do the dotted parts of a key.
    """
    lineno = 1
    base = 0  # levels of the current table header
    i, n = 0, len(text)
    line_start = True
    while i < n:
        ch = text[i]
        if ch == "\n":
            lineno += 1
            line_start = True
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch in "\"'":
            i = _skip_string(text, i)
            line_start = False
            continue
        if line_start:
            line_start = False
            end = text.find("\n", i)
            end = n if end < 0 else end
            line = text[i:end]
            if ch == "[":
                header = _HEADER.match(line)
                if header:
                    base = len(_split_key(header.group(2))) + (header.group(1) == "[[")
                    if base > max_depth:
                        return lineno
                    i = end
                    continue
            key = _KEY.match(line)
            if key:
                levels = base + len(_split_key(key.group(1)))
                if levels > max_depth:
                    return lineno
                i += key.end()
                found = _value_depth(text, i, levels, max_depth)
                if found < 0:
                    return lineno + text.count("\n", i, -found)
                lineno += text.count("\n", i, found)
                i = found
                continue
            i += 1
            continue
        line_start = False
        i += 1
    return None


def _value_depth(text: str, i: int, levels: int, max_depth: int) -> int:
    """Scan one value from ``i``: the index after it, or ``-index`` where it gets too deep."""
    depth = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i = _skip_string(text, i)
            continue
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch in "[{":
            depth += 1
            if levels + depth > max_depth:
                return -i
        elif ch in "]}":
            depth -= 1
        elif ch == "\n" and depth <= 0:
            return i
        i += 1
    return i


def _skip_string(text: str, i: int) -> int:
    """The index after the TOML string starting at ``i`` (or the end of the text)."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        end = text.find(quote * 3, i + 3)
        if end < 0:
            return len(text)
        end += 3
        while end < len(text) and text[end] == quote:  # up to two quotes end the content
            end += 1
        return end
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\" and quote == '"':
            j += 2
            continue
        if ch in (quote, "\n"):
            return j + 1
        j += 1
    return j


def toml_type(value: Any) -> str:
    """Name a raw TOML value for a message, with the value itself when it is short.

    Tables and arrays are named without their contents (they may hold secrets
    and are long).
    """
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})" if abs(value) < 10**30 else number(value)
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({shown(value)})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters."""
    text = repr(value) if not isinstance(value, dict | list) else toml_type(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: float) -> str:
    """A number for a message: ``:g`` for a float; a long integer by its digit count.

    (``format(10**400, "g")`` raises OverflowError: an int too large for a float.)
    """
    if isinstance(value, int):
        text = str(abs(value)) if abs(value) < 10**30 else None
        if text is None:
            return f"a {len(str(abs(value)))}-digit integer"
        return str(value)
    return f"{value:g}"


# --------------------------------------------------------------------------- building


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@attrs.frozen
class Schema:
    """How to build attrs classes from TOML (see the module docstring for the options).

    Attributes:
        hooks: converters for custom types, looked up before anything else; a
            key is a type or a type expression exactly as annotated (e.g. a union).
        fallback_to_default: a key with a bad value falls back to its default
            (True) or makes its table invalid (False).
        constructor_errors: exceptions of an attrs class's constructor that are
            reported on the table's path (the table is then invalid).
    """

    hooks: Mapping[Any, Hook] = attrs.field(factory=dict)
    fallback_to_default: bool = False
    constructor_errors: tuple[type[Exception], ...] = ()

    def build(
        self, cls: type[T], data: Any, report: Report, path: tuple[str, ...] = ()
    ) -> T | Invalid:
        """Build attrs class ``cls`` from a TOML table at ``path``, reporting every problem.

        Returns:
            The instance, or :data:`INVALID` when the table cannot be built (not
            a table, a required key missing, a bad key under the strict policy,
            or a reported constructor error).
        """
        if not isinstance(data, dict):
            report(path, f"expected a table, got {toml_type(data)}")
            return INVALID
        schema_cls: Any = cls  # an attrs class; T cannot say so
        fields = {toml_key(f): f for f in attrs.fields(schema_cls) if not f.metadata.get(INTERNAL)}
        hints = _hints(schema_cls)
        kwargs: dict[str, Any] = {}
        failed = False
        for key, raw in data.items():
            field = fields.get(key)
            if field is None:
                report((*path, key), f"unknown key{_did_you_mean(key, fields)}")
                failed = True
                continue
            ok, value = self.convert(
                hints[field.name], raw, (*path, key), report, names=field.metadata.get(ENTRY_NAMES)
            )
            if not ok or not _in_range(field, value, (*path, key), report):
                failed = True
                continue
            kwargs[field.name] = value
        required = {key: f.name for key, f in fields.items() if f.default is attrs.NOTHING}
        for key in required:
            if key not in data:
                report((*path, key), "required key is missing")
        if any(name not in kwargs for name in required.values()):
            return INVALID
        if failed and not self.fallback_to_default:
            return INVALID
        try:
            return cls(**kwargs)
        except self.constructor_errors as exc:
            report(path, str(exc))
            return INVALID

    def convert(
        self,
        tp: Any,
        raw: Any,
        path: tuple[str, ...],
        report: Report,
        *,
        names: EntryNames | None = None,
    ) -> tuple[bool, Any]:
        """Convert one raw TOML value to schema type ``tp``: ``(ok, value)``.

        ``(False, None)`` after reporting. ``names`` restricts the entry names
        of a ``Mapping`` type.
        """
        hook = self.hooks.get(tp)
        if hook is not None:
            return hook(raw, path, report)
        if tp is Any:
            # Free-form: whatever TOML holds is valid; only made read-only.
            return True, freeze(raw)
        origin = get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                return self.convert(args[0], raw, path, report, names=names)
            raise TypeError(f"unsupported union in schema: {tp}")  # pragma: no cover
        if attrs.has(tp):
            built = self.build(tp, raw, report, path)
            return (False, None) if isinstance(built, Invalid) else (True, built)
        if origin in (dict, Mapping):
            return self._mapping(get_args(tp)[1], raw, path, report, names)
        if origin is tuple:
            return self._array(get_args(tp)[0], raw, path, report)
        if origin is Literal:
            choices = get_args(tp)
            if raw in choices and isinstance(raw, type(choices[0])):
                return True, raw
            report(path, f"must be one of {', '.join(repr(c) for c in choices)}, got {shown(raw)}")
            return False, None
        scalar = _SCALARS.get(tp)
        if scalar is None:
            raise TypeError(f"unsupported type in schema: {tp!r}")  # pragma: no cover
        return scalar(raw, path, report)

    def _mapping(
        self,
        tp: Any,
        raw: Any,
        path: tuple[str, ...],
        report: Report,
        names: EntryNames | None,
    ) -> tuple[bool, Any]:
        """A table whose keys are names chosen by the user (``[venues.NAME]``, balances)."""
        if not isinstance(raw, dict):
            what = "a table of named entries" if names is not None else "a table"
            report(path, f"expected {what}, got {toml_type(raw)}")
            return False, None
        entries: dict[str, Any] = {}
        ok = True
        for name, value in raw.items():
            if names is not None and not names.pattern.fullmatch(name):
                report((*path, name), names.message)
                ok = False
                continue
            good, built = self.convert(tp, value, (*path, name), report)
            if good:
                entries[name] = built
            ok = ok and good
        if self.fallback_to_default:
            # Bad entries are left out (their problems are reported) and the good
            # ones kept, so cross-key checks still see them.
            return True, types.MappingProxyType(entries)
        return ok, types.MappingProxyType(entries)

    def _array(self, tp: Any, raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
        if not isinstance(raw, list):
            what = "an array of tables" if attrs.has(tp) else "an array"
            report(path, f"expected {what}, got {toml_type(raw)}")
            return False, None
        items = []
        ok = True
        for index, item in enumerate(raw):
            good, value = self.convert(tp, item, (*path, str(index)), report)
            ok = ok and good
            items.append(value)
        return ok, tuple(items)


def from_mapping_hook(
    cls: type[Any],
    factory: Callable[[Mapping[str, Any]], Any],
    *,
    errors: tuple[type[Exception], ...] = (ValueError, TypeError),
) -> Hook:
    """A :data:`Hook` for an attrs class that types and checks its own fields.

    The table's keys are checked against ``cls``'s fields (unknown keys get the
    usual "did you mean"), then the raw table goes to ``factory`` (e.g.
    ``FaultSpec.from_mapping``); its ``errors`` are reported on the table's path.
    """
    known = [toml_key(f) for f in attrs.fields(cls) if not f.metadata.get(INTERNAL)]

    def hook(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
        if not isinstance(raw, dict):
            report(path, f"expected a table, got {toml_type(raw)}")
            return False, None
        unknown = [key for key in raw if key not in known]
        for key in unknown:
            report((*path, key), f"unknown key{_did_you_mean(key, known)}")
        if unknown:
            return False, None
        try:
            return True, factory(raw)
        except errors as exc:
            report(path, str(exc))
            return False, None

    return hook


def _did_you_mean(key: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _in_range(field: attrs.Attribute[Any], value: Any, path: tuple[str, ...], r: Report) -> bool:
    meta = field.metadata
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    if meta.get("ge") is not None and value < meta["ge"]:
        r(path, f"must be >= {meta['ge']:g}, got {number(value)}")
        return False
    if meta.get("gt") is not None and value <= meta["gt"]:
        r(path, f"must be > {meta['gt']:g}, got {number(value)}")
        return False
    if meta.get("le") is not None and value > meta["le"]:
        r(path, f"must be <= {meta['le']:g}, got {number(value)}")
        return False
    return True


# --------------------------------------------------------------------------- scalars


def _plain(accepts: Callable[[Any], bool], make: Callable[[Any], Any], expected: str) -> Hook:
    """A scalar converter: ``make(raw)`` when ``accepts(raw)``, else "expected ..., got ..."."""

    def convert(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
        if accepts(raw):
            return True, make(raw)
        report(path, f"expected {expected}, got {toml_type(raw)}")
        return False, None

    return convert


def _identity(raw: Any) -> Any:
    return raw


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def _float(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except OverflowError:  # an integer beyond the range of a float
            value = math.inf
        if math.isfinite(value):
            return True, value
        report(path, "must be a finite number")
        return False, None
    report(path, f"expected a number, got {toml_type(raw)}")
    return False, None


def _decimal(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
    # A TOML float has already been rounded to binary: refuse it and show the string.
    if isinstance(raw, float):
        hint = format(Decimal(repr(raw)), "f")
        report(path, f'write decimals as strings (e.g. "{hint}"), not floats')
        return False, None
    if _is_int(raw):
        return True, Decimal(raw)
    if isinstance(raw, str):
        try:
            value = Decimal(raw)
        except InvalidOperation:
            report(path, f"not a decimal number: {shown(raw)}")
            return False, None
        if value.is_finite():
            return True, value
    report(path, f'expected a decimal string such as "0.01", got {shown(raw)}')
    return False, None


def _path(raw: Any, path: tuple[str, ...], report: Report) -> tuple[bool, Any]:
    if not isinstance(raw, str) or not raw:
        report(path, f"expected a non-empty path string, got {toml_type(raw)}")
        return False, None
    if "\x00" in raw:
        # Every system call on it would fail (with a ValueError, not an OSError).
        report(path, "a path cannot contain a NUL character")
        return False, None
    return True, Path(raw)


_SCALARS: Final[Mapping[Any, Hook]] = {
    bool: _plain(lambda raw: isinstance(raw, bool), _identity, "true or false"),
    int: _plain(_is_int, _identity, "an integer"),
    float: _float,
    str: _plain(lambda raw: isinstance(raw, str), _identity, "a string"),
    Path: _path,
    Decimal: _decimal,
}


# --------------------------------------------------------------------------- line numbers

# Linear-time patterns only: these run on whatever the file holds (a lazy
# "[^\]]+?" next to "\s*" was cubic on a long run of blanks).
_HEADER: Final = re.compile(r"^[ \t]*(\[\[?)([^\]]*)\]\]?[ \t]*(?:#.*)?$")
_BARE_OR_QUOTED: Final = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_KEY: Final = re.compile(rf"^\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_INLINE_KEY: Final = re.compile(r"[{,]\s*([A-Za-z0-9_-]+)\s*=")


def _split_key(key: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", key)
    return tuple(a or b or c for a, b, c in parts)


def locate_keys(text: str) -> dict[tuple[str, ...], int]:
    """Map dotted key paths to the line (1-based) where they are defined.

    A line scanner, not a parser: enough to point at tables, keys (bare,
    quoted or dotted) and keys of one-line inline tables, which is where
    configuration mistakes are made. Multi-line strings are skipped. Arrays of
    tables are indexed like the parsed data (``symbols.0.tick_size``), and a
    ``[sub]`` or ``[[sub]]`` table below one belongs to its latest element.
    """
    found: dict[tuple[str, ...], int] = {}
    prefix: tuple[str, ...] = ()
    # Number of elements so far of each array of tables, by its resolved path.
    array_counts: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header:
            name = _split_key(header.group(2))
            parent: tuple[str, ...] = ()
            for part in name[:-1]:
                parent = (*parent, part)
                if parent in array_counts:
                    parent = (*parent, str(array_counts[parent] - 1))
            table = (*parent, *name[-1:])
            if header.group(1) == "[[":
                index = array_counts.get(table, 0)
                array_counts[table] = index + 1
                prefix = (*table, str(index))
            else:
                prefix = table
            found.setdefault(prefix, lineno)
            continue
        key = _KEY.match(line)
        if key:
            path = (*prefix, *_split_key(key.group(1)))
            found.setdefault(path, lineno)
            rest = line[key.end() :]
            for inner in _INLINE_KEY.finditer(rest):
                found.setdefault((*path, inner.group(1)), lineno)
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return found


def line_for(lines: Mapping[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of ``path``, else of its nearest enclosing table that has one."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None
