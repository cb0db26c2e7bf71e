"""What one ``tradingd bench orders`` run sets up: its options, the two configurations, the daemon.

* :class:`BenchOptions` — the counts one run uses (``tradingd bench orders``
  flags, declared in :func:`daemon.bench.orders.add_arguments`).
* :func:`sim_config` — the simulator: BTCUSDT only, market paused, two
  accounts (tradingd's and the baseline's), rate limits out of reach.
* :func:`daemon_config` — tradingd: the simulator as venue, orders over the
  run's transport (:data:`TRANSPORTS`), risk limits off, an account queue
  that holds a whole burst, polling slowed to an hour.
* :class:`RunningDaemon` — a real :class:`~daemon.app.Daemon` in the bench
  process's Trio loop, and what the phases read from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

from daemon.app import Daemon
from daemon.bench.common import START_TIMEOUT_S, BenchError
from daemon.bench.orders_baseline import SYMBOL
from daemon.bench.orders_load import account_names
from daemon.orders.service import OrdersService, Pipeline

__all__ = [
    "QUICK",
    "TRANSPORTS",
    "UNLIMITED",
    "VENUE",
    "BenchOptions",
    "RunningDaemon",
    "daemon_config",
    "sim_config",
]

VENUE: Final = "sim"

#: The order transports a run can measure (``[venues.NAME] order_transport``).
TRANSPORTS: Final = ("rest", "ws-api")

#: Limits of the simulator's rate-limit windows: high enough never to be met.
UNLIMITED: Final = 1_000_000_000


@attrs.frozen(kw_only=True)
class BenchOptions:
    """What one run does; :func:`daemon.bench.orders.add_arguments` says what each option means."""

    latency_orders: int = 300
    warmup: int = 20
    block: int = 25
    entry_orders: int = 2000
    http_orders: int = 1500
    submitters: int = 8
    clients: int = 8
    accounts: int = 1

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(BenchOptions):
            value = getattr(self, field.name)
            minimum = 0 if field.name == "warmup" else 1
            if value < minimum:
                flag = "--" + field.name.replace("_", "-")
                raise ValueError(f"{flag} must be >= {minimum}, got {value}")


#: The counts of ``--quick``: a short run, for a smoke check or a noisy machine.
QUICK: Final = BenchOptions(latency_orders=100, warmup=10, entry_orders=600, http_orders=400)


# ------------------------------------------------------------------ the simulator process


def sim_config(tradingd_key: tuple[str, str], baseline_key: tuple[str, str]) -> str:
    """The simulator: BTCUSDT only, market paused, two accounts, rate limits out of reach."""
    accounts = "".join(
        f'[[accounts]]\napi_key = "{key}"\nsecret_key = "{secret}"\n'
        f'balances = {{ BTC = "1000", USDT = "{UNLIMITED}" }}\n\n'
        for key, secret in (tradingd_key, baseline_key)
    )
    limits = "".join(
        f'[[rate_limits]]\ntype = "{kind}"\ninterval = "{interval}"\n'
        f"interval_num = {num}\nlimit = {UNLIMITED}\n\n"
        for kind, interval, num in (
            ("REQUEST_WEIGHT", "MINUTE", 1),
            ("ORDERS", "SECOND", 10),
            ("ORDERS", "DAY", 1),
            ("RAW_REQUESTS", "MINUTE", 5),
        )
    )
    return f'[market]\npaused = true\n\n[[symbols]]\nsymbol = "{SYMBOL}"\n\n{accounts}{limits}'


# ------------------------------------------------------------------ the daemon


def daemon_config(
    workdir: Path,
    rest_url: str,
    ws_url: str,
    options: BenchOptions,
    secret_files: Mapping[str, Path],
    *,
    transport: str = "rest",
    store: str = "",
) -> str:
    """tradingd's configuration: the simulator as venue, risk off, a queue for a whole burst.

    ``transport`` is the venue's ``order_transport`` (one of :data:`TRANSPORTS`);
    ``store`` a ``[store]`` section to add (``--store postgres``:
    :func:`daemon.bench.pg.store_toml`; none: the default SQLite file).
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown order transport {transport!r}")
    capacity = max(1000, options.entry_orders + 100, options.http_orders + 100)
    accounts = "".join(
        f'[accounts.{name}]\nvenue = "{VENUE}"\n\n' for name in account_names(options.accounts)
    )
    q = json.dumps  # a TOML basic string is a JSON string (paths, URLs)
    return f"""\
[daemon]
state_dir = {q(str(workdir / "state"))}
control_socket = {q(str(workdir / "control.sock"))}
shutdown_timeout_s = 30.0

[admin]
listen = "127.0.0.1:0"
token = {{ file = {q(str(secret_files["token"]))} }}

[orders]
account_queue_capacity = {capacity}
poll_interval_s = 3600.0
reconcile_interval_s = 3600.0

[risk]
max_orders_per_window = 0
max_open_orders = 0

[venues.{VENUE}]
rest_url = {q(rest_url)}
ws_url = {q(ws_url)}
api_key = {{ file = {q(str(secret_files["api_key"]))} }}
api_secret = {{ file = {q(str(secret_files["api_secret"]))} }}
order_transport = {q(transport)}

{accounts}{store}"""


@attrs.define
class RunningDaemon:
    """A real :class:`~daemon.app.Daemon` running in this process's Trio loop."""

    daemon: Daemon
    exited: trio.Event
    exit_code: list[int]

    @property
    def service(self) -> OrdersService:
        service = self.daemon.orders
        assert service is not None, "accounts are configured"
        return service

    def pipeline(self) -> Pipeline:
        if self.exited.is_set():
            raise BenchError(f"tradingd exited with {self.exit_code} (see its log)")
        pipeline = self.service.pipeline
        if pipeline is None:
            raise BenchError("the order pipeline is not running (see the log)")
        return pipeline

    def ws_api_client(self, orders: int) -> dict[str, int]:
        """Counters of tradingd's WebSocket API order client (``order_transport = "ws-api"``).

        Raises:
            BenchError: it made fewer than ``orders`` requests, so orders did
                not go over the WebSocket API (the run would measure REST).
        """
        ws_orders = self.daemon.venue_links[VENUE].ws_orders
        if ws_orders is None:
            raise BenchError("tradingd has no WebSocket API order client (see the log)")
        stats = ws_orders.stats
        if stats.requests < orders:
            raise BenchError(
                f"tradingd's WebSocket API client made {stats.requests} requests for "
                f"{orders} orders: the orders did not go over the WebSocket API"
            )
        return {
            "connections": stats.connections,
            "requests": stats.requests,
            "answers": stats.answers,
            "timeouts": stats.timeouts,
            "lost_in_flight": stats.lost_in_flight,
        }

    async def wait_ready(self) -> Pipeline:
        """Until the daemon is READY, the venue answered and sending is enabled.

        With ``order_transport = "ws-api"``, also until the WebSocket API
        connection is up (so that no measured order waits for it).
        """
        link = self.daemon.venue_links[VENUE]
        ws_api = link.config.order_transport == "ws-api"
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                if self.exited.is_set():
                    raise BenchError(f"tradingd exited during start-up with {self.exit_code}")
                pipeline = self.service.pipeline
                if (
                    self.daemon.state == "running"
                    and self.daemon.admin_address is not None
                    and link.exchange_info is not None
                    and pipeline is not None
                    and pipeline.executor.sending_enabled.is_set()
                    and (not ws_api or (link.ws_orders is not None and link.ws_orders.connected))
                ):
                    return pipeline
                await trio.sleep(0.01)
