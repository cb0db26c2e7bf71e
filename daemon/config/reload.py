"""Reloading a configuration: what changed, and applying the live part.

Each key declares whether a change can be applied by a reload (SIGHUP,
``tradingd reload``) or needs a restart (its ``reload`` metadata,
:mod:`daemon.config.declare`); :func:`diff` names both kinds and
:func:`apply_live` applies the live ones to the running configuration.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import attrs

from daemon import tomlschema
from daemon.config.schema import Config, entry_type, is_section, leaves, schema_fields


@attrs.frozen
class ConfigDiff:
    """What changed between two configurations, by reload kind."""

    live: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def diff(old: Config, new: Config) -> ConfigDiff:
    """Keys whose value differs, split into live-reloadable and restart-only.

    A named entry that was added or removed (``[accounts.x]``) is named once,
    as restart-only: what it configures (a connection, an account's queue, a
    strategy) is built at start. Keys inside an entry present in both follow
    their own reload kind (``accounts.x.risk.*`` are live).
    """
    oldleaves = {leaf.key: leaf for leaf in leaves(old)}
    newleaves = {leaf.key: leaf for leaf in leaves(new)}
    old_entries = {leaf.entry for leaf in oldleaves.values()}
    new_entries = {leaf.entry for leaf in newleaves.values()}
    live: list[str] = []
    restart: list[str] = []
    for key in [*newleaves, *(k for k in oldleaves if k not in newleaves)]:
        before, after = oldleaves.get(key), newleaves.get(key)
        if before is not None and after is not None and before.value == after.value:
            continue
        leaf = after if after is not None else before
        assert leaf is not None
        if leaf.entry is not None and (leaf.entry in old_entries) != (leaf.entry in new_entries):
            name = ".".join(leaf.entry)
            if name not in restart:
                restart.append(name)
        else:
            (live if leaf.reload == "live" else restart).append(key)
    return ConfigDiff(live=tuple(live), restart=tuple(restart))


def apply_live(current: Config, new: Config, keys: tuple[str, ...]) -> Config:
    """``current`` with the values of ``keys`` (from :func:`diff`'s ``live``) taken from ``new``.

    Walks TOML key paths through sections and named entries alike, so
    ``accounts.main.risk.max_open_orders`` replaces one value inside one
    account's table and leaves everything else, including keys that need a
    restart, as it is.

    Raises:
        KeyError: a key is not in the schema, or names an entry missing from
            either configuration (added and removed entries need a restart).
    """
    merged = current
    for key in keys:
        merged = _replace(merged, new, tuple(key.split(".")), key)
    return merged


def _replace(current: Any, new: Any, parts: tuple[str, ...], key: str) -> Any:
    fields = {tomlschema.toml_key(f): f for f in schema_fields(type(current))}
    field = fields.get(parts[0])
    if field is None:
        raise KeyError(f"{key}: not a configuration key")
    value = getattr(new, field.name)
    rest = parts[1:]
    if rest and entry_type(field.type) is not None:
        entries: Mapping[str, Any] = getattr(current, field.name)
        name = rest[0]
        if name not in entries or name not in value:
            raise KeyError(f"{key}: entry {name!r} is not in both configurations")
        item = _replace(entries[name], value[name], rest[1:], key) if rest[1:] else value[name]
        value = types.MappingProxyType({**entries, name: item})
    elif rest:
        if not is_section(field.type):
            raise KeyError(f"{key}: not a configuration key")
        value = _replace(getattr(current, field.name), value, rest, key)
    return attrs.evolve(current, **{field.name: value})
