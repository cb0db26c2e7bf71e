"""How a config key is declared: :func:`opt`, :func:`required`, :func:`section`, ...

Each attrs field of the schema (:mod:`daemon.config.sections`,
:mod:`daemon.config.trading`) is made by one of these functions, which put the
key's help, range (``ge``, ``gt``, ``le``, checked by :mod:`daemon.tomlschema`)
and reload kind (``"live"`` or ``"restart"``, read by :mod:`daemon.config.reload`)
in the field's metadata. Also here: the name patterns of symbols and of named
entries (``[venues.NAME]``), shared by the schema and the loader.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias

import attrs

from daemon import tomlschema

Reload = Literal["live", "restart"]

#: A decimal limit as written in the file: a :class:`~decimal.Decimal`, or ``""``
#: for "unlimited" (a TOML string either way; floats are refused).
DecimalLimit: TypeAlias = Decimal | Literal[""]


def opt(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    reload: Reload = "restart",
    names: tomlschema.EntryNames | None = None,
) -> Any:
    """Declare a config key: its default, one line of help, its range and reload kind.

    ``names`` restricts the keys of a table-valued key (e.g. symbols).
    """
    metadata: dict[str, object] = {"reload": reload}
    if names is not None:
        metadata[tomlschema.ENTRY_NAMES] = names
    return tomlschema.opt(default, help=help, ge=ge, gt=gt, le=le, **metadata)


def override(base: attrs.Attribute[Any], *, help: str) -> Any:
    """Declare a key that, when set, overrides ``base``, a key of another section.

    Unset (None) by default; its range, reload kind and entry names are
    ``base``'s, so that the two are declared once and cannot drift apart.
    """
    meta = base.metadata
    return opt(
        None,
        help=help,
        ge=meta.get("ge"),
        gt=meta.get("gt"),
        le=meta.get("le"),
        reload=meta.get("reload", "restart"),
        names=meta.get(tomlschema.ENTRY_NAMES),
    )


def tuning(default: Any, *, help: str) -> Any:
    """Declare a component's internal tunable: not a config key, only its code and tests set it.

    It lives in the section so that the component takes one value (the section)
    and each number has one declaration; the loader never reads it from the file
    (an unknown key there is an error) and :func:`~daemon.config.diff` and
    :func:`~daemon.config.describe_keys` skip it. ``default`` may be an
    :class:`attrs.Factory` computed from the keys.
    """
    return attrs.field(default=default, metadata={"help": help, tomlschema.INTERNAL: True})


def required(*, help: str, reload: Reload = "restart", key: str | None = None) -> Any:
    """Declare a key that has no default and must be present.

    ``key`` is the TOML key when it cannot be the attribute's name (``class``).
    """
    metadata: dict[str, Any] = {"help": help, "reload": reload}
    if key is not None:
        metadata[tomlschema.TOML_KEY] = key
    return attrs.field(metadata=metadata)


def section(cls: type[Any], *, help: str) -> Any:
    """Declare a nested table with all-default contents."""
    return attrs.field(factory=cls, metadata={"help": help, "reload": "live"})


def table(
    *, help: str, reload: Reload = "restart", names: tomlschema.EntryNames | None = None
) -> Any:
    """Declare a table-valued key whose keys the user chooses; empty by default."""
    metadata: dict[str, Any] = {"help": help, "reload": reload}
    if names is not None:
        metadata[tomlschema.ENTRY_NAMES] = names
    return attrs.field(factory=_empty_mapping, metadata=metadata)


def named(*, help: str) -> Any:
    """Declare a table of named entries such as ``[venues.NAME]`` (empty by default)."""
    return attrs.field(
        factory=_empty_mapping, metadata={"help": help, tomlschema.ENTRY_NAMES: _ENTRY_NAMES}
    )


def _empty_mapping() -> Mapping[str, Any]:
    return types.MappingProxyType({})


SYMBOL: Final = re.compile(r"[A-Z0-9]{2,20}")
_SYMBOL_MESSAGE: Final = "symbols are 2-20 characters of A-Z and 0-9, e.g. BTCUSDT"
SYMBOL_NAMES: Final = tomlschema.EntryNames(SYMBOL, _SYMBOL_MESSAGE)
#: Names of entries in named tables such as ``[venues.NAME]``.
_ENTRY_NAMES: Final = tomlschema.EntryNames(
    re.compile(r"[a-z0-9][a-z0-9_-]{0,31}"),
    "names are 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
)
