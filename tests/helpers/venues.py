"""Client settings for tests, with the ``[venues.NAME]`` defaults from :mod:`daemon.config`.

:class:`~daemon.venues.binance.BinanceConfig` declares no default for the keys
of ``[venues.NAME]`` (each setting is declared once, in the config section):
tests that do not care about them take the section's defaults from here.
"""

from __future__ import annotations

from typing import Any

import attrs

from daemon.config import VenueConfig
from daemon.venues.binance import BinanceConfig

#: The BinanceConfig fields that are keys of ``[venues.NAME]``.
VENUE_KEYS = ("recv_window_ms", "request_timeout_s", "stale_after_s")


def venue_defaults() -> dict[str, Any]:
    """Those fields at the defaults of :class:`~daemon.config.VenueConfig`."""
    fields = attrs.fields_dict(VenueConfig)
    return {name: fields[name].default for name in VENUE_KEYS}


def binance_config(**fields: Any) -> BinanceConfig:
    """A :class:`BinanceConfig`; the ``[venues.NAME]`` keys default as in the config."""
    return BinanceConfig(**(venue_defaults() | fields))
