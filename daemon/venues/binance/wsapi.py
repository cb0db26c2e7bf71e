"""Orders over the Binance WebSocket API: the REST client's order calls on ``/ws-api/v3``.

:class:`BinanceWsApiOrders` has the order calls of
:class:`~daemon.venues.binance.rest.BinanceRestClient` — ``new_order``,
``cancel_order``, ``get_order``, ``open_orders``, ``my_trades`` — with the
same arguments, return types and exceptions (it satisfies
:class:`daemon.orders.ledger.OrderVenue`), over a WebSocket API connection
(:mod:`.wssession`) that its :meth:`~BinanceWsApiOrders.run` task keeps up,
so the pipeline can swap transports.

* **The same rules as REST.** The venue clock and the rate-limit admission
  are the ones the REST client uses (``rest.clock``, ``rest.limits``); each
  request acquires its weight (and one ORDERS unit for ``order.place``)
  before it is sent; a ``-1021`` re-syncs and resends once.
* **Never a blind resend.** ``new_order`` and ``cancel_order`` are never
  retried: no answer within ``request_timeout_s``, the connection lost after
  sending, a 5xx, ``-1000/-1006/-1007`` or an undecodable answer →
  :class:`~daemon.errors.VenueOutcomeUnknownError` (query the client order id).
  Queries are retried by the REST client's bounded policy.
* **Down means unsent.** A request that finds no connection waits at most
  ``connect_timeout_s`` for one (the run task reconnects with backoff:
  ``reconnect_initial_s`` doubling to ``reconnect_max_s``, equal jitter), then
  fails with :class:`~daemon.errors.VenueUnavailableError` *without being sent*.
* **Replacement without a cut.** A connection that retires (``serverShutdown``,
  a missing pong, ``max_connection_age_s``) stops taking requests at once; the
  next one opens while the requests in flight on the old one finish.

Usage::

    orders = BinanceWsApiOrders(rest_client)      # or BinanceVenue.ws_api_orders()
    nursery.start_soon(orders.run)
    report = await orders.new_order(order)

The user data stream over the same kind of connection is
:class:`daemon.venues.binance.userstream.UserDataStream`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from daemon.errors import VenueError, VenueUnavailableError
from daemon.model.orders import FillReport, NewOrder, OrderReport, OrderResponseType
from daemon.resilience import Jitter, RetryPolicy
from daemon.venues.binance.codec import wsapi as ws
from daemon.venues.binance.rest import BinanceRestClient, classify_rest_outcome
from daemon.venues.binance.wssession import (
    CONNECTION_ERRORS,
    SessionClosed,
    WsApiSession,
    WsApiStats,
    open_session,
    scrub,
)

__all__ = ["BinanceWsApiOrders"]

log = logging.getLogger("tradingd.venues.binance.wsapi")

T = TypeVar("T")


class BinanceWsApiOrders:
    """The REST client's order calls over a WebSocket API connection kept up by :meth:`run`.

    Satisfies :class:`daemon.orders.ledger.OrderVenue`. The calls are safe
    from many tasks at once (requests are matched by id). Query calls
    (``get_order``, ``open_orders``, ``my_trades``) are retried like REST
    queries; ``new_order`` and ``cancel_order`` never are.

    Args:
        rest: The venue's REST client: its config and the venue clock and
            limits it shares (``rest.clock``, ``rest.limits``).
        rng: Jitter of the reconnect backoff and the query retries.
    """

    def __init__(self, rest: BinanceRestClient, *, rng: random.Random | None = None) -> None:
        self._rest = rest
        self._config = rest.config
        self.name = rest.config.name
        rng = rng if rng is not None else random.Random()
        self.stats = WsApiStats()
        self._session: WsApiSession | None = None
        self._up = trio.Event()
        self._running = False
        self._last_error: str | None = None
        config = self._config
        self._backoff = RetryPolicy(
            name=f"{config.name}.ws-api.connect",
            base_delay_s=config.reconnect_initial_s,
            max_delay_s=config.reconnect_max_s,
            jitter=Jitter.EQUAL,
            rng=rng,
        )
        self._retry = RetryPolicy(
            name=f"{config.name}.ws-api",
            max_attempts=config.retry_max_attempts,
            max_elapsed_s=config.retry_max_elapsed_s,
            base_delay_s=config.retry_base_delay_s,
            max_delay_s=config.retry_max_delay_s,
            classifier=classify_rest_outcome,
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"BinanceWsApiOrders({self.name!r}, {self._config.ws_api_url!r})"

    @property
    def connected(self) -> bool:
        """Whether a connection is up and taking requests."""
        return self._session is not None and self._session.usable

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``/status``."""
        return {
            "venue": self.name,
            "url": self._config.ws_api_url,
            "connected": self.connected,
            "in_flight": self._session.in_flight if self._session is not None else 0,
            "last_error": self._last_error,
            "retries": self._retry.stats.snapshot(),
            **self.stats.snapshot(),
        }

    # ------------------------------------------------------------------ connection

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection up, reconnecting with backoff, until cancelled.

        Reports started at once: a venue that is down must not fail the
        caller's start; requests meanwhile wait up to ``connect_timeout_s``
        and then fail unsent. A connection that retires (``serverShutdown``,
        a missing pong, ``max_connection_age_s``) stops taking requests at
        once; the next one is opened while the requests in flight on the old
        one finish (bounded by ``request_timeout_s``).
        """
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self._running = True
        task_status.started()
        failures = 0
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    retired = trio.Event()
                    outcome: list[WsApiSession] = []
                    nursery.start_soon(self._serve_connection, retired, outcome)
                    await retired.wait()
                    session = outcome[0] if outcome else None
                    if session is not None and session.retire_reason in (
                        "server_shutdown",
                        "max_age",
                    ):
                        failures = 0
                        continue  # replace it now
                    # A connection that worked resets the backoff; one that
                    # failed or never answered does not (no hot reconnect loop).
                    failures = 1 if session is not None and session.proven else failures + 1
                    await trio.sleep(self._backoff.next_delay_s(failures))
        finally:
            self._running = False
            self._session = None

    async def _serve_connection(self, retired: trio.Event, outcome: list[WsApiSession]) -> None:
        """One connection: open, serve until it retires (then ``retired``), drain, close."""
        config = self._config
        try:
            async with open_session(
                self._rest, stats=self.stats, on_retire=self._retired
            ) as session:
                self._session = session
                self._last_error = None
                self._up.set()
                with trio.move_on_after(config.max_connection_age_s):
                    await session.retired.wait()
                session.retire(
                    "max_age", f"connection age reached {config.max_connection_age_s:g}s"
                )
                outcome.append(session)
                retired.set()  # the run loop opens the next connection meanwhile
                await session.drain(config.request_timeout_s)
                log.warning(
                    "%s: ws-api connection %d ended (%s)",
                    self.name,
                    session.number,
                    session.retire_detail,
                )
        except (*CONNECTION_ERRORS, VenueError) as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            if outcome:  # closing a connection we were leaving anyway failed
                log.info("%s: ws-api connection close failed (%s)", self.name, detail)
                return
            self.stats.connect_failures += 1
            self._last_error = detail
            log.warning("%s: ws-api connection failed (%s)", self.name, detail)
        finally:
            retired.set()

    def _retired(self, session: WsApiSession) -> None:
        """A session stopped taking requests: new ones wait for the next connection."""
        if self._session is session:
            self._session = None
            self._up = trio.Event()

    def _scrub(self, text: str) -> str:
        return scrub(text, self._config.api_key, self._config.api_secret)

    async def _current(self, endpoint: str) -> WsApiSession:
        """The usable session, waiting at most ``connect_timeout_s`` for one."""
        wait_s = self._config.connect_timeout_s
        with trio.move_on_after(wait_s):
            while True:
                session = self._session
                if session is not None and session.usable:
                    return session
                await self._up.wait()
        raise VenueUnavailableError(
            f"{self.name} {endpoint}: no WebSocket API connection within {wait_s:g}s; not sent"
            + (f" (last error: {self._last_error})" if self._last_error else ""),
            venue=self.name,
            endpoint=endpoint,
        )

    async def _call(
        self,
        spec: ws.WsRequestSpec,
        read: Callable[[Any], T],
        on_sent: Callable[[], None] | None = None,
    ) -> T:
        session = await self._current(spec.endpoint)
        try:
            return await session.call(spec, read, on_sent=on_sent)
        except SessionClosed as exc:  # retired between the wait and the send
            raise VenueUnavailableError(
                f"{self.name} {spec.endpoint}: connection closed ({exc}); not sent",
                venue=self.name,
                endpoint=spec.endpoint,
            ) from None

    async def _query(self, spec: ws.WsRequestSpec, read: Callable[[Any], T]) -> T:
        async for attempt in self._retry:
            with attempt:
                return await self._call(spec, read)
        raise AssertionError("unreachable: a retry loop ends by returning or raising")

    # ------------------------------------------------------------------ order calls

    async def new_order(
        self,
        order: NewOrder,
        *,
        resp_type: OrderResponseType = OrderResponseType.FULL,
        on_sent: Callable[[], None] | None = None,
    ) -> OrderReport:
        """``order.place``. Never retried automatically.

        ``on_sent`` is called once the frame has been written to the connection.

        Raises:
            VenueOutcomeUnknownError: the order may exist (5xx, -1000/-1006/-1007,
                no answer within ``request_timeout_s`` or the connection lost
                after sending, undecodable answer).
            VenueUnavailableError: not sent (no connection) or refused
                unprocessed (-1001/-1008).
            VenueRateLimitedError: refused by the venue's or the local limiter.
            DuplicateOrderError, OrderRejectedError, FilterFailureError: rejected.
        """
        return await self._call(
            ws.place_order_request(order, resp_type),
            partial(ws.order_result, venue=self.name),
            on_sent,
        )

    async def cancel_order(
        self,
        symbol: str,
        *,
        client_order_id: str | None = None,
        order_id: int | None = None,
        new_client_order_id: str | None = None,
    ) -> OrderReport:
        """``order.cancel``. Never retried automatically.

        Raises:
            CancelRejectedError: -2011 (unknown or already closed order).
            VenueOutcomeUnknownError: the cancel may have taken effect.
        """
        return await self._call(
            ws.cancel_order_request(
                symbol,
                client_order_id=client_order_id,
                order_id=order_id,
                new_client_order_id=new_client_order_id,
            ),
            partial(ws.order_result, venue=self.name),
        )

    async def get_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> OrderReport:
        """``order.status`` by client order id (preferred) or venue order id.

        Raises:
            OrderNotFoundError: -2013.
        """
        return await self._query(
            ws.order_status_request(symbol, client_order_id=client_order_id, order_id=order_id),
            partial(ws.order_result, venue=self.name),
        )

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """``openOrders.status`` for one symbol (weight 6) or all (weight 80)."""
        return await self._query(
            ws.open_orders_request(symbol), partial(ws.orders_result, venue=self.name)
        )

    async def my_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        from_id: int | None = None,
        start_time_ms: int | None = None,
        end_time_ms: int | None = None,
        limit: int = 500,
    ) -> list[FillReport]:
        """``myTrades``: our fills on ``symbol``."""
        return await self._query(
            ws.my_trades_request(
                symbol,
                order_id=order_id,
                from_id=from_id,
                start_time_ms=start_time_ms,
                end_time_ms=end_time_ms,
                limit=limit,
            ),
            partial(ws.trades_result, venue=self.name),
        )

    async def server_time(self) -> int:
        """``time``: the venue's clock (epoch ms), over this connection."""
        return await self._query(ws.time_request(), ws.server_time_result)
