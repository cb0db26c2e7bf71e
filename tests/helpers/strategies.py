"""Strategy specs for tests, with the ``[strategies.NAME]`` defaults from :mod:`daemon.config`.

:class:`~daemon.strategies.StrategySpec` declares no default for the keys of
``[strategies.NAME]`` (each setting is declared once, in
:class:`~daemon.config.StrategyConfig`): tests that do not care about them take
the section's defaults from here.
"""

from __future__ import annotations

from typing import Any

import attrs

from daemon.config import StrategyConfig
from daemon.strategies import StrategySpec

#: The StrategySpec fields that are keys of ``[strategies.NAME]`` with a default.
SPEC_KEYS = ("enabled", "account", "heartbeat_interval_s", "max_restarts", "restart_period_s")


def spec_defaults() -> dict[str, Any]:
    """Those fields at the defaults of :class:`~daemon.config.StrategyConfig`."""
    fields = attrs.fields_dict(StrategyConfig)
    return {name: fields[name].default for name in SPEC_KEYS}


def strategy_spec(name: str, class_path: str, **fields: Any) -> StrategySpec:
    """A :class:`StrategySpec`; the ``[strategies.NAME]`` keys default as in the config."""
    return StrategySpec(name=name, class_path=class_path, **(spec_defaults() | fields))
