"""Decoding outside data: any failure becomes one documented error.

Everything that reaches tradingd from outside is hostile until decoded:
venue frames and bodies, admin requests, control-socket lines, config files.
The standard library's parsers raise more than ``ValueError`` on hostile
input: ``RecursionError`` for deep nesting (``json``'s C scanner and the
pure-Python ``tomllib`` alike), ``ValueError`` from the int-string
conversion limit, ``UnicodeDecodeError`` for bad UTF-8, ``MemoryError`` for
absurd sizes. A parser that lets one of those escape can crash the task that
called it, and a supervised child crashing on every frame is a crash loop.

These helpers turn *any* exception of decoding into :class:`DecodeError`
(a ``ValueError``, so callers that already handle ``ValueError`` keep doing
so), and add the limits the formats allow: a size limit before parsing and a
nesting-depth limit after it (walked iteratively, never by recursion).

Hot paths (market-data frames) pass ``max_depth=None``: their schema check
refuses nested shapes anyway, and the walk would cost on every frame.

Files named by outside input (config files, secret files) are read by
:func:`read_regular_file`: a FIFO in their place must not block a reload
forever, and a device must not be read without end.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import stat
import tomllib
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DecodeError",
    "NotRegularFileError",
    "check_depth",
    "json_loads",
    "nesting_depth",
    "read_regular_file",
    "toml_loads",
]

#: Nesting depth allowed in outside JSON and TOML documents by default.
#: tradingd's own formats nest at most a handful of levels.
DEFAULT_MAX_DEPTH = 32


class DecodeError(ValueError):
    """Outside data that could not be decoded (a ``ValueError``)."""


class NotRegularFileError(OSError):
    """A path names a FIFO, a device, a directory: anything but a regular file."""

    def __init__(self) -> None:
        super().__init__(errno.EINVAL, "not a regular file")


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of the regular file at ``path``.

    Opened ``O_NONBLOCK`` (a FIFO must not wait for a writer) and refused
    unless it is a regular file. A result longer than ``max_bytes`` means the
    file is too long; the caller words that.

    Raises:
        OSError: cannot be opened or read (``FileNotFoundError``,
            ``PermissionError``, :class:`NotRegularFileError`, …).
        ValueError: a NUL in the path.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses directories
            raise NotRegularFileError
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(max_bytes + 1)
    finally:
        os.close(fd)


def nesting_depth(obj: Any, *, stop_above: int | None = None) -> int:
    """The nesting depth of a decoded document (a scalar is 0, ``[]`` is 1).

    Iterative, so it cannot itself overflow the stack. With ``stop_above``,
    the walk stops as soon as the depth exceeds it (the result is then
    ``stop_above + 1``).
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if stop_above is not None and deepest > stop_above:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def check_depth(obj: Any, max_depth: int, *, what: str = "document") -> None:
    """Raise :class:`DecodeError` when ``obj`` nests deeper than ``max_depth``."""
    if nesting_depth(obj, stop_above=max_depth) > max_depth:
        raise DecodeError(f"{what} nests deeper than {max_depth} levels")


def _refuse_constant(name: str) -> NoReturn:
    raise DecodeError(f"non-standard JSON constant {name} (NaN and Infinity are refused)")


def json_loads(
    data: bytes | bytearray | str,
    *,
    what: str = "JSON",
    max_bytes: int | None = None,
    max_depth: int | None = DEFAULT_MAX_DEPTH,
    parse_float: Callable[[str], Any] | None = None,
    allow_constants: bool = False,
) -> Any:
    """Parse JSON from outside; every failure is a :class:`DecodeError`.

    Args:
        data: the raw document; bytes must be UTF-8 (no BOM sniffing).
        what: names the document in error messages ("request body", …).
        max_bytes: refuse a longer document before parsing it.
        max_depth: refuse a document nesting deeper (``None``: only the
            interpreter's recursion limit, which is caught).
        parse_float: as for :func:`json.loads` (``decimal.Decimal`` for money).
        allow_constants: accept ``NaN``/``Infinity``/``-Infinity`` (never
            for prices, quantities or anything that is summed).

    Raises:
        DecodeError: too long, not UTF-8, not JSON, numbers beyond the
            int-string limit, nested too deep, or a refused constant.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise DecodeError(f"{what} is longer than {max_bytes} bytes")
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        obj = _decoder(parse_float, allow_constants).decode(text)
    except DecodeError as exc:
        raise DecodeError(f"{what}: {exc}") from None
    except RecursionError:
        raise DecodeError(f"{what} nests too deep") from None
    except MemoryError:
        raise DecodeError(f"{what} is too large to decode") from None
    except UnicodeError:
        raise DecodeError(f"{what} is not valid UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, the int-string limit
        raise DecodeError(f"{what} is not valid JSON: {_short(str(exc))}") from None
    except Exception as exc:  # anything else a hostile document can provoke
        raise DecodeError(f"{what} could not be decoded ({type(exc).__name__})") from None
    # A document nests at most as deep as it has opening brackets (brackets inside
    # strings only make this bound looser): most documents are refused or passed by
    # counting them, at C speed, without walking the decoded objects.
    if max_depth is not None and text.count("[") + text.count("{") > max_depth:
        check_depth(obj, max_depth, what=what)
    return obj


@functools.lru_cache(maxsize=16)
def _decoder(parse_float: Callable[[str], Any] | None, allow_constants: bool) -> json.JSONDecoder:
    """One decoder per option set (``json.loads`` with options builds one per call:
    a measurable cost per stream frame). Decoders keep no state between calls."""
    return json.JSONDecoder(
        parse_float=parse_float,
        parse_constant=None if allow_constants else _refuse_constant,
    )


def toml_loads(text: str, *, what: str = "TOML", max_depth: int | None = DEFAULT_MAX_DEPTH) -> Any:
    """Parse TOML from outside; every failure is a :class:`DecodeError`.

    ``tomllib`` is pure Python: deep nesting raises ``RecursionError`` from
    deep in its stack, and an integer beyond the int-string limit raises a
    plain ``ValueError``; both are caught here with everything else.
    The message of a syntax error keeps ``tomllib``'s "(at line N, column M)".
    """
    try:
        obj = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DecodeError(f"{what} syntax error: {_short(str(exc))}") from None
    except RecursionError:
        raise DecodeError(f"{what} nests too deep") from None
    except MemoryError:
        raise DecodeError(f"{what} is too large to decode") from None
    except ValueError as exc:  # the int-string limit, and any other value error
        raise DecodeError(f"{what}: a value could not be decoded: {_short(str(exc))}") from None
    except Exception as exc:
        raise DecodeError(f"{what} could not be decoded ({type(exc).__name__})") from None
    if max_depth is not None:
        check_depth(obj, max_depth, what=what)
    return obj


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
