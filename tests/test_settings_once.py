"""Each setting is declared once: in its ``daemon.config`` section, nowhere else.

A component takes its config section (``[orders]`` → :class:`OrdersConfig`,
``[marketdata]`` → :class:`MarketDataConfig`) rather than a second class that
repeats the keys with their own defaults, and every cross-key rule lives in the
config loader. These tests fail when a mirror of a section comes back.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Iterator
from typing import Any

import attrs

import daemon
from daemon import config as configmod
from daemon import tomlschema
from daemon.config import Config, MarketDataConfig, OrdersConfig
from daemon.marketdata.service import MarketDataService
from daemon.orders.service import OrdersService

#: Two same-named fields with the same default make a class a mirror of a section.
MIRROR_FIELDS = 2


def _in_config(cls: type[Any]) -> bool:
    """``cls`` is defined in the ``daemon.config`` package (any of its modules)."""
    package = configmod.__name__
    return cls.__module__ == package or cls.__module__.startswith(package + ".")


def _sections(cls: type[Any] = Config, path: str = "") -> Iterator[tuple[str, type[Any]]]:
    """Every table class of the schema with its TOML path (named entries as ``NAME``)."""
    yield path or "<top>", cls
    for field in attrs.fields(cls):
        tp = field.type
        if isinstance(tp, type) and attrs.has(tp) and _in_config(tp):
            yield from _sections(tp, f"{path}.{field.name}".lstrip("."))
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and attrs.has(arg) and _in_config(arg):
                yield from _sections(arg, f"{path}.{field.name}.NAME".lstrip("."))


def _literal_defaults(cls: type[Any]) -> dict[str, Any]:
    """Fields of an attrs class or dataclass that have a plain (not factory) default."""
    if attrs.has(cls):
        return {
            f.name: f.default
            for f in attrs.fields(cls)
            if f.default is not attrs.NOTHING and not isinstance(f.default, attrs.Factory)  # type: ignore[arg-type]
        }
    if dataclasses.is_dataclass(cls):
        return {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }
    return {}


def _key_defaults(cls: type[Any]) -> dict[str, Any]:
    """The config keys of one section with their defaults (internal tunables excluded)."""
    return {
        name: default
        for name, default in _literal_defaults(cls).items()
        if not attrs.fields_dict(cls)[name].metadata.get(tomlschema.INTERNAL)
    }


def _daemon_classes() -> Iterator[type[Any]]:
    """Every attrs class and dataclass defined in a module of the ``daemon`` package."""
    for info in pkgutil.walk_packages(daemon.__path__, prefix="daemon."):
        if info.name.endswith(".__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name and (attrs.has(obj) or dataclasses.is_dataclass(obj)):
                yield obj


#: Classes outside the config that share a section's defaults (class → section):
#: each takes them from constants of its own module, and the section's keys take
#: the same constants, so each number is still written once. Each must still be
#: a mirror: remove its line once it no longer is.
KNOWN_MIRRORS: dict[str, str] = {
    "daemon.risk.limits.RiskLimits": "risk",
    "daemon.supervise.policy.SupervisorPolicy": "supervision",
}


def mirrors(classes: Iterator[type[Any]] | None = None) -> dict[str, list[str]]:
    """Classes outside ``daemon.config`` that repeat keys of a section with their defaults.

    Returns ``"module.Class [section]"`` → the repeated keys. ``None`` defaults
    ("not set") are not counted.
    """
    sections = {path: _key_defaults(cls) for path, cls in _sections()}
    found: dict[str, list[str]] = {}
    for cls in _daemon_classes() if classes is None else classes:
        if _in_config(cls):
            continue
        mine = {k: v for k, v in _literal_defaults(cls).items() if v is not None}
        for path, keys in sections.items():
            same = sorted(
                name
                for name, default in mine.items()
                if name in keys and type(keys[name]) is type(default) and keys[name] == default
            )
            if len(same) >= MIRROR_FIELDS:
                found[f"{cls.__module__}.{cls.__qualname__} [{path}]"] = same
    return found


def test_no_class_outside_the_config_repeats_a_section_with_its_defaults() -> None:
    found = mirrors()
    known = {f"{cls} [{path}]" for cls, path in KNOWN_MIRRORS.items()}
    assert {name: keys for name, keys in found.items() if name not in known} == {}
    assert sorted(known - set(found)) == [], "fixed: remove them from KNOWN_MIRRORS"


def test_the_known_mirrors_share_their_modules_constants() -> None:
    # A known mirror is allowed only because both sides name one constant: the
    # section's module imports it from the class's module (ruff refuses an
    # unused import), so the number is written once.
    sections = dict(_sections())
    for qualified, path in KNOWN_MIRRORS.items():
        module_name, _, class_name = qualified.rpartition(".")
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        assert path in sections, qualified
        section_module = importlib.import_module(sections[path].__module__)
        for key in mirrors(iter([cls]))[f"{qualified} [{path}]"]:
            default = _literal_defaults(cls)[key]
            shared = [
                name
                for name, value in vars(module).items()
                if name.startswith("DEFAULT_")
                and type(value) is type(default)
                and value == default
                and vars(section_module).get(name) is value
            ]
            assert shared, f"{qualified}.{key}: no DEFAULT_* constant shared with daemon.config"


def test_the_sections_are_walked() -> None:
    # Guards the walk itself: a test that sees no section could never fail.
    paths = dict(_sections())
    assert paths["orders"] is OrdersConfig
    assert paths["marketdata"] is MarketDataConfig
    assert "venues.NAME" in paths
    assert _key_defaults(OrdersConfig)["send_timeout_s"] == 5.0
    assert "lag_window" not in _key_defaults(MarketDataConfig)


def test_the_components_take_their_config_section() -> None:
    components: dict[type[Any], type[Any]] = {
        OrdersService: OrdersConfig,
        MarketDataService: MarketDataConfig,
    }
    for component, section in components.items():
        # A string (postponed annotations): the name, bound in the component's module.
        annotation = inspect.signature(component).parameters["settings"].annotation
        assert annotation == section.__name__, component
        assert vars(importlib.import_module(component.__module__))[annotation] is section


def test_a_mirror_class_would_be_found() -> None:
    @attrs.frozen
    class Mirror:
        send_timeout_s: float = 5.0
        section_deadline_s: float = 10.0
        shards: int = 3  # another default: not a repetition

    Mirror.__module__ = "daemon.orders.fake"
    assert mirrors(iter([Mirror])) == {
        "daemon.orders.fake.test_a_mirror_class_would_be_found.<locals>.Mirror [orders]": [
            "section_deadline_s",
            "send_timeout_s",
        ]
    }
