"""The Binance Spot protocol: Binance, its spot testnet, and the bundled simulator.

Layers, inside out:

* :mod:`.codec` — sans-IO: request building and signing, answers, errors,
  stream frames (pure functions, shared by the two shells below; the
  simulator follows the same documented rules with code of its own);
* :mod:`.rest` — :class:`BinanceRestClient`, the REST shell over httpx2;
* :mod:`.stream` — :class:`BinanceStream`, the WebSocket shell over
  trio-websocket;
* :mod:`.config` — :class:`BinanceConfig`.

:class:`BinanceVenue` joins the two shells into a
:class:`daemon.venues.base.Venue`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import httpx2

from daemon.venues.base import StreamKind, Subscription
from daemon.venues.binance import codec
from daemon.venues.binance.config import BinanceConfig
from daemon.venues.binance.rest import BinanceRestClient
from daemon.venues.binance.stream import (
    BinanceStream,
    DisconnectReason,
    MalformedFrame,
    StreamConnected,
    StreamDisconnected,
    StreamEvent,
)

__all__ = [
    "BinanceConfig",
    "BinanceRestClient",
    "BinanceStream",
    "BinanceVenue",
    "DisconnectReason",
    "MalformedFrame",
    "StreamConnected",
    "StreamDisconnected",
    "StreamEvent",
    "stream_names",
]


def stream_names(subscriptions: Sequence[Subscription]) -> list[str]:
    """Binance stream names of venue-neutral subscriptions (depth at 100 ms)."""
    names = []
    for sub in subscriptions:
        if sub.kind is StreamKind.TRADES:
            names.append(codec.trade_stream(sub.symbol))
        else:
            names.append(codec.depth_stream(sub.symbol, 100))
    return names


class BinanceVenue(BinanceRestClient):
    """A Binance-protocol venue: the REST client plus a stream factory.

    Implements :class:`daemon.venues.base.Venue`. The REST methods are
    :class:`BinanceRestClient`'s; :meth:`market_stream` builds a
    :class:`BinanceStream` for venue-neutral subscriptions.
    """

    def __init__(
        self,
        config: BinanceConfig,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(config, transport=transport, rng=rng)
        self._stream_rng = rng

    def market_stream(
        self, subscriptions: Sequence[Subscription], *, combined: bool | None = None
    ) -> BinanceStream:
        """A (not yet running) stream of ``subscriptions``; start it with ``run``."""
        return BinanceStream(
            self.config, stream_names(subscriptions), combined=combined, rng=self._stream_rng
        )
