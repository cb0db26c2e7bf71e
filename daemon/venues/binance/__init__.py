"""The Binance Spot protocol: Binance, its spot testnet, and the bundled simulator.

Layers, inside out:

* :mod:`.codec` — sans-IO: request building and signing, answers, errors,
  stream frames (pure functions, shared by the two shells below; the
  simulator follows the same documented rules with code of its own);
* :mod:`.clock` — :class:`~.clock.VenueClock`, the server clock offset
  signed requests use, and :mod:`.admission` —
  :class:`~.admission.VenueLimits`, the rate-limit windows every request is
  admitted by: both shared by the REST and the WebSocket API shells;
* :mod:`.rest` — :class:`BinanceRestClient`, the REST shell over httpx2
  (it owns the venue's clock and limits and measures the clock);
* :mod:`.stream` — :class:`BinanceStream`, the WebSocket shell over
  trio-websocket;
* :mod:`.wssession` — one WebSocket API connection (``/ws-api/v3``):
  requests matched to answers by id, shared limiter and clock;
* :mod:`.wsapi` — :class:`BinanceWsApiOrders`, the REST order calls over
  the WebSocket API;
* :mod:`.userstream` — :class:`UserDataStream`, the account's events
  (``userDataStream.subscribe.signature``), kept subscribed;
* :mod:`.config` — :class:`BinanceConfig`.

:class:`BinanceVenue` joins the shells into a
:class:`daemon.venues.base.Venue`; its :meth:`~BinanceVenue.ws_api_orders`
and :meth:`~BinanceVenue.user_data_stream` build the WebSocket API clients
that share its clock offset and rate limiter.
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
from daemon.venues.binance.userstream import UserDataStream
from daemon.venues.binance.wsapi import BinanceWsApiOrders

__all__ = [
    "BinanceConfig",
    "BinanceRestClient",
    "BinanceStream",
    "BinanceVenue",
    "BinanceWsApiOrders",
    "DisconnectReason",
    "MalformedFrame",
    "StreamConnected",
    "StreamDisconnected",
    "StreamEvent",
    "UserDataStream",
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
    """A Binance-protocol venue: the REST client plus stream and WebSocket API factories.

    Implements :class:`daemon.venues.base.Venue`. The REST methods are
    :class:`BinanceRestClient`'s; :meth:`market_stream` builds a
    :class:`BinanceStream` for venue-neutral subscriptions;
    :meth:`ws_api_orders` and :meth:`user_data_stream` build WebSocket API
    clients that share this client's clock offset and rate limiter (Binance
    counts weight per IP and orders per account, whatever the transport).
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

    def ws_api_orders(self) -> BinanceWsApiOrders:
        """The order calls over the WebSocket API (not yet connected; run its ``run``)."""
        return BinanceWsApiOrders(self, rng=self._stream_rng)

    def user_data_stream(self) -> UserDataStream:
        """This account's user data stream (not yet running; start it with ``run``)."""
        return UserDataStream(self, rng=self._stream_rng)
