"""The daemon's trading side: the order pipeline over the venue links, the strategies over it.

:class:`~daemon.app.Daemon` calls these while it composes itself; each gets
what it uses, explicitly:

* :class:`LinkVenues` — the pipeline's
  :class:`~daemon.orders.ledger.VenueAccess` over the daemon's
  :class:`~daemon.venues.link.VenueLink` objects (a venue's client only while
  its link is up).
* :func:`build_orders` — the :class:`~daemon.orders.service.OrdersService`,
  when ``[accounts]`` are configured; :func:`orders_child` — its child in the
  ``data`` supervisor, with the start and stop budgets its settings imply.
* :func:`build_intake` — the Redis stream intake (:mod:`daemon.intake`), when
  ``[intake] enabled`` and the pipeline exists; :func:`intake_child` — its
  child (after ``data``: it stops before the pipeline drains).
* :func:`build_strategies` — the enabled strategies (their classes imported
  now: a typo fails the start), trading through the order service, priced by
  the captured books, sized by the venues' symbol filters
  (:func:`find_symbol`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.intake import IntakeService
from daemon.marketdata.book import LocalBook
from daemon.model.instruments import ExchangeInfo, SymbolInfo
from daemon.orders.ledger import OrderVenue
from daemon.orders.service import OrdersService
from daemon.orders.userstream import UserStreamSource
from daemon.store.orders import OrdersBackend
from daemon.strategies import MarketDataPrices, StrategiesService, StrategySpec
from daemon.supervise import ChildSpec, SupervisorEvent
from daemon.venues.link import VenueLink

__all__ = [
    "LinkVenues",
    "build_intake",
    "build_orders",
    "build_strategies",
    "find_symbol",
    "intake_child",
    "orders_child",
]


class LinkVenues:
    """The order pipeline's venue access over the daemon's venue links.

    :class:`~daemon.orders.ledger.VenueAccess` (each venue's order client:
    REST, or the WebSocket API with ``order_transport = "ws-api"``) and
    :class:`~daemon.orders.userstream.UserStreamAccess` (its user data stream).
    """

    def __init__(self, links: Mapping[str, VenueLink]) -> None:
        self.links = links

    def client(self, venue: str) -> OrderVenue | None:
        link = self.links.get(venue)
        if link is None or link.state.value != "up":
            return None
        return link.order_client

    async def wait_client(self, venue: str) -> OrderVenue:
        link = self.links[venue]
        client = await link.wait_up()
        orders = link.order_client
        return client if orders is None else orders

    def user_stream_enabled(self, venue: str) -> bool:
        link = self.links.get(venue)
        return link is not None and link.user_stream_enabled

    def user_stream(self, venue: str) -> UserStreamSource | None:
        link = self.links.get(venue)
        return None if link is None else link.user_stream()

    def exchange_info(self, venue: str) -> ExchangeInfo | None:
        link = self.links.get(venue)
        return None if link is None else link.exchange_info

    def recv_window_ms(self, venue: str) -> int:
        link = self.links.get(venue)
        return link.config.recv_window_ms if link is not None else 5000


def find_symbol(links: Mapping[str, VenueLink], symbol: str) -> SymbolInfo | None:
    """``symbol``'s filters from the first venue whose exchangeInfo lists it."""
    for link in links.values():
        info = link.exchange_info
        if info is not None and symbol in info.symbols:
            return info.symbols[symbol]
    return None


def build_orders(
    config: Config,
    links: Mapping[str, VenueLink],
    open_store: Callable[[], Awaitable[OrdersBackend]],
    reference_price: Callable[[str, str], Decimal | None],
) -> OrdersService | None:
    """The order pipeline, when ``[accounts]`` are configured."""
    if not config.accounts:
        return None
    return OrdersService(
        config.orders,
        {name: account.venue for name, account in config.accounts.items()},
        config.limit_table(),
        LinkVenues(links),
        open_store,
        reference_price=reference_price,
    )


def orders_child(orders: OrdersService, grace_s: float) -> ChildSpec:
    """``data/orders``: started once start-up reconciliation is done, stopped after its drain."""
    s = orders.settings
    return ChildSpec(
        "orders",
        orders.run,
        start_timeout_s=s.startup_reconcile_timeout_s + 10.0,
        shutdown_grace_s=grace_s + s.drain_timeout_s + s.section_deadline_s,
    )


def build_intake(config: Config, orders: OrdersService | None) -> IntakeService | None:
    """The Redis stream intake, when enabled (the loader requires ``[accounts]`` then)."""
    if not config.intake.enabled or orders is None:
        return None
    return IntakeService(config.intake, orders, id_prefix=config.orders.id_prefix)


def intake_child(intake: IntakeService, grace_s: float) -> ChildSpec:
    """``intake``: not critical (Redis down degrades health); its stop waits for one read."""
    s = intake.settings
    call_s = s.block_ms / 1000 + s.socket_timeout_s
    return ChildSpec(
        "intake",
        intake.run,
        shutdown_grace_s=grace_s + call_s,
        cleanup_timeout_s=call_s + 5.0,
        heartbeat_interval_s=s.heartbeat_interval_s,
        heartbeat_tolerance=3.0,
        critical=False,
    )


def build_strategies(
    config: Config,
    orders: OrdersService | None,
    links: Mapping[str, VenueLink],
    books: Callable[[], Mapping[str, LocalBook] | None],
    on_event: Callable[[SupervisorEvent], None],
) -> StrategiesService | None:
    """Enabled strategies; their classes are imported here (a typo fails the start)."""
    specs = [StrategySpec.from_config(name, s) for name, s in config.strategies.items()]
    if not any(spec.enabled for spec in specs):
        return None
    if orders is None:
        raise ConfigError("strategies need at least one [accounts.NAME] to trade on")
    return StrategiesService(
        specs,
        gateway=orders,
        prices=MarketDataPrices(books),
        symbol_info=lambda symbol: find_symbol(links, symbol),
        on_event=on_event,
    )
