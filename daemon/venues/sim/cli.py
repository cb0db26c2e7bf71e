"""``tradingd sim``: run the exchange simulator from the command line.

The lead's :mod:`daemon.cli` creates the ``sim`` sub-parser and calls
:func:`add_arguments` on it, then :func:`main` with the parsed arguments.

Precedence: built-in defaults < ``--config FILE`` < flags. Flags are merged
into the file's data *before* validation, so a flag gets exactly the checks a
config key gets (and the same error messages).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import attrs
import trio

from daemon import tomlschema
from daemon.errors import ConfigError
from daemon.venues.sim import config as simconfig
from daemon.venues.sim.config import SYMBOL_PRESETS, PercentPriceBySideConfig, SimConfig
from daemon.venues.sim.faults import FAULT_KINDS, parse_fault_flag
from daemon.venues.sim.persist import EXIT_STATE_WRITE, StateFileError
from daemon.venues.sim.server import SimServer

__all__ = ["add_arguments", "config_from_args", "main"]

log = logging.getLogger("tradingd.sim.cli")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2

DESCRIPTION: Final = """\
Run a Binance-Spot-compatible exchange simulator on loopback: the same REST paths
(/api/v3/...), signatures, rate-limit headers and WebSocket streams (/ws/<stream>,
/stream?streams=a/b with <symbol>@trade, <symbol>@depth@100ms, <symbol>@depth),
over a seeded deterministic market. Point tradingd's venue at the printed URLs.
"""

_BAND: Final = PercentPriceBySideConfig()
#: The default price bands, named in the epilog (from the config, so they cannot drift).
_BANDS: Final = (
    f"BUY {_BAND.bid_multiplier_down}x..{_BAND.bid_multiplier_up}x, SELL "
    f"{_BAND.ask_multiplier_down}x..{_BAND.ask_multiplier_up}x the last trade price"
)

EPILOG: Final = f"""\
fault kinds (--fault, [[faults]] in the config, POST /sim/faults):
  {", ".join(FAULT_KINDS)}
  e.g. --fault kind=rest_error,phase=after,method=POST,path=/api/v3/order,status=503,count=2
       --fault kind=ws_drop,every_s=30      --fault kind=order_invisible,delay_s=2

control API on the REST port (JSON):
  GET /sim/status            GET|POST|DELETE /sim/faults, DELETE /sim/faults/ID
  GET /sim/audit?apiKey=&symbol=&clientOrderId=&fromSeq=&limit=
  GET /sim/trades?symbol=&fromId=&limit=     GET /sim/balances
  GET|POST /sim/market {{"paused": bool, "steps": n}}
  POST /sim/market/order {{"symbol","side","quantity","price"?,"timeInForce"?}}
  POST /sim/market/clear {{"symbol"}}
  POST /sim/streams/drop {{"mode": "abort"|"close"}}
  POST /sim/streams/shutdown {{"grace_s": s}}
  GET|POST /sim/clock {{"offset_ms": int}}  (within +-86400000)

state file (--state-file): orders, books, balances, trades, audit, id counters and the
  market's generator survive a kill and restart (on the same ports: clients reconnect).
  Not kept: connections, subscriptions, faults, rate-limit windows, the pause, the
  clock offset, bench runs. An unusable file is an error (exit {EXIT_CONFIG}), never a
  fresh start; a failed write stops the simulator (exit {EXIT_STATE_WRITE}).

symbol presets (--symbols): {", ".join(SYMBOL_PRESETS)}; other symbols, their filters
  (tick/step sizes, min/max price, qty, notional) and starting prices, and account
  balances are set in the config file ([[symbols]], [[accounts]], [[rate_limits]]).
price bands ([symbols.percent_price_by_side], PERCENT_PRICE_BY_SIDE, enforced as -1013):
  default {_BANDS}.
default account: the example key of Binance's REST docs (api key vmPUZE6mv9...).
"""


def _decimal(text: str) -> str:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return text


@attrs.frozen
class _Flag:
    """One flag of a ``tradingd sim`` group: what ``add_argument`` is given."""

    name: str
    help: str
    type: Callable[[str], object] | None = None
    metavar: str | None = None
    #: ``store`` (a value), ``append`` (repeatable) or ``store_true`` (unset: ``None``).
    action: Literal["store", "append", "store_true"] = "store"

    def add_to(self, group: argparse._ArgumentGroup) -> None:
        if self.action == "store_true":
            group.add_argument(self.name, action=self.action, default=None, help=self.help)
        elif self.type is None:
            group.add_argument(self.name, action=self.action, metavar=self.metavar, help=self.help)
        else:
            group.add_argument(
                self.name, action=self.action, type=self.type, metavar=self.metavar, help=self.help
            )


#: The flags that set config keys, by group, in ``--help`` order (defaults in parentheses).
_GROUPS: Final[tuple[tuple[str, tuple[_Flag, ...]], ...]] = (
    (
        "listening",
        (
            _Flag("--host", "address to bind (default 127.0.0.1)"),
            _Flag("--rest-port", "REST port, 0 = any (8900)", int, "PORT"),
            _Flag("--ws-port", "WebSocket port, 0 = any (8901)", int, "PORT"),
            _Flag(
                "--rest-request-timeout-s",
                "bound on one REST request; longer stalls become 503 (60)",
                float,
                "S",
            ),
            _Flag("--rest-max-connections", "REST connections at once (256)", int, "N"),
        ),
    ),
    (
        "market",
        (
            _Flag(
                "--symbols",
                f"comma-separated presets ({', '.join(SYMBOL_PRESETS)}); default BTCUSDT,ETHUSDT",
                metavar="LIST",
            ),
            _Flag("--seed", "market random seed (1)", int),
            _Flag(
                "--events-per-s",
                "market events per second; 0 = as fast as possible (20)",
                float,
                "N",
            ),
            _Flag("--trade-probability", "share of events that trade (0.3)", float, "P"),
            _Flag("--depth-levels", "synthetic levels per book side (20)", int, "N"),
            _Flag("--max-lots", "largest synthetic order, in lots (10)", int, "N"),
            _Flag("--paused", "start with the market paused", action="store_true"),
            _Flag("--batch", "events between checkpoints when --events-per-s is 0 (256)", int, "N"),
            _Flag("--first-trade-id", "first trade id of every symbol (1)", int, "ID"),
            _Flag("--first-update-id", "first order book update id of every symbol (1)", int, "ID"),
            _Flag(
                "--trade-retention", "trades kept for /api/v3/historicalTrades (10000)", int, "N"
            ),
        ),
    ),
    (
        "trading",
        (
            _Flag(
                "--account",
                "API key and secret (repeatable; replaces the config's accounts)",
                metavar="KEY:SECRET",
                action="append",
            ),
            _Flag("--maker-commission", "maker fee rate (0.001)", _decimal, "RATE"),
            _Flag("--taker-commission", "taker fee rate (0.001)", _decimal, "RATE"),
            _Flag(
                "--order-visibility-delay-s",
                "new orders invisible to queries for S seconds (0)",
                float,
                "S",
            ),
            _Flag("--audit-retention", "accepted orders kept for /sim/audit (100000)", int, "N"),
            _Flag(
                "--audit-trade-retention",
                "published trades kept per symbol for /sim/trades (1000000)",
                int,
                "N",
            ),
        ),
    ),
    (
        "rate limits",
        (
            _Flag("--weight-limit-1m", "REQUEST_WEIGHT per minute per IP (6000)", int, "N"),
            _Flag("--orders-limit-10s", "ORDERS per 10 s per account (50)", int, "N"),
            _Flag("--orders-limit-1d", "ORDERS per day per account (160000)", int, "N"),
            _Flag("--raw-requests-limit-5m", "RAW_REQUESTS per 5 minutes per IP (61000)", int, "N"),
            _Flag(
                "--ban-after-violations",
                "requests sent while limited before a 418 ban (3)",
                int,
                "N",
            ),
            _Flag("--ban-s", "first ban length, doubling for repeat offenders (120)", float, "S"),
            _Flag("--ban-max-s", "longest ban (259200 = 3 days)", float, "S"),
        ),
    ),
    (
        "streams",
        (
            _Flag("--ping-interval-s", "server ping interval (20)", float, "S"),
            _Flag("--pong-timeout-s", "drop a connection whose pong is this late (60)", float, "S"),
            _Flag("--max-connection-s", "connection lifetime (86400)", float, "S"),
            _Flag("--max-streams", "streams per connection (1024)", int, "N"),
            _Flag(
                "--send-queue",
                "messages queued per connection before it is dropped (10000)",
                int,
                "N",
            ),
        ),
    ),
    (
        "state and clock",
        (
            _Flag(
                "--state-file",
                "keep the venue's state in PATH across restarts (default: memory only)",
                metavar="PATH",
            ),
            _Flag(
                "--state-fsync",
                "fsync the state file after every write (survives a host crash)",
                action="store_true",
            ),
            _Flag(
                "--clock-offset-ms",
                "skew the simulator's wall clock by MS, within +-86400000 (0)",
                int,
                "MS",
            ),
        ),
    ),
    (
        "faults",
        (
            _Flag(
                "--fault",
                "arm a fault at start: key=value,... or JSON (repeatable; see below)",
                metavar="SPEC",
                action="append",
            ),
        ),
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``tradingd sim`` flag to ``parser`` (and its description and epilog)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--config", "-c", metavar="PATH", help="simulator config file (TOML); flags override it")
    add("--print-config", action="store_true", help="print the effective config as JSON and exit")
    add(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="default info",
    )

    for title, flags in _GROUPS:
        group = parser.add_argument_group(title)
        for flag in flags:
            flag.add_to(group)


_TOP: Final = {
    "host": "host",
    "rest_port": "rest_port",
    "ws_port": "ws_port",
    "maker_commission": "maker_commission",
    "taker_commission": "taker_commission",
    "order_visibility_delay_s": "order_visibility_delay_s",
    "audit_retention": "audit_retention",
    "audit_trade_retention": "audit_trade_retention",
    "rest_request_timeout_s": "rest_request_timeout_s",
    "rest_max_connections": "rest_max_connections",
    "state_fsync": "state_fsync",
    "clock_offset_ms": "clock_offset_ms",
}
_SECTIONS: Final = {
    ("market", "seed"): "seed",
    ("market", "events_per_s"): "events_per_s",
    ("market", "trade_probability"): "trade_probability",
    ("market", "depth_levels"): "depth_levels",
    ("market", "max_lots"): "max_lots",
    ("market", "paused"): "paused",
    ("market", "trade_retention"): "trade_retention",
    ("market", "batch"): "batch",
    ("market", "first_trade_id"): "first_trade_id",
    ("market", "first_update_id"): "first_update_id",
    ("limits", "ban_max_s"): "ban_max_s",
    ("streams", "max_streams"): "max_streams",
    ("limits", "ban_after_violations"): "ban_after_violations",
    ("limits", "ban_s"): "ban_s",
    ("streams", "ping_interval_s"): "ping_interval_s",
    ("streams", "pong_timeout_s"): "pong_timeout_s",
    ("streams", "max_connection_s"): "max_connection_s",
    ("streams", "send_queue"): "send_queue",
}
_RATE_FLAGS: Final = {
    "weight_limit_1m": ("REQUEST_WEIGHT", "MINUTE", 1),
    "orders_limit_10s": ("ORDERS", "SECOND", 10),
    "orders_limit_1d": ("ORDERS", "DAY", 1),
    "raw_requests_limit_5m": ("RAW_REQUESTS", "MINUTE", 5),
}


def _plain(value: Any) -> Any:
    """attrs values → TOML-like data (decimals as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The effective :class:`SimConfig`: defaults, then ``--config``, then flags.

    Raises:
        ConfigError: every problem, each naming its source.
    """
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "<flags>"
    if args.config:
        source = args.config
        # Every failure to read or parse (deep nesting, huge integers, bad UTF-8
        # included) is a ConfigError naming the file.
        text = tomlschema.read_text(args.config)
        data = tomlschema.parse(text, source=source)
        lines = simconfig.locate_keys(text)
    problems: list[str] = []
    for dest, key in _TOP.items():
        value = getattr(args, dest)
        if value is not None:
            data[key] = value
    for (section, key), dest in _SECTIONS.items():
        value = getattr(args, dest)
        if value is not None:
            data.setdefault(section, {})[key] = value
    if args.state_file is not None:
        data["state_file"] = args.state_file
    if args.symbols:
        chosen = []
        for name in filter(None, (s.strip().upper() for s in args.symbols.split(","))):
            preset = SYMBOL_PRESETS.get(name)
            if preset is None:
                problems.append(
                    f"--symbols: unknown preset {name!r} (known: {', '.join(SYMBOL_PRESETS)}; "
                    "define others in the config file)"
                )
            else:
                chosen.append(_plain(attrs.asdict(preset)))
        data["symbols"] = chosen
    if args.account:
        accounts = []
        for item in args.account:
            key, sep, secret = item.partition(":")
            if not sep or not key or not secret:
                problems.append(f"--account: expected KEY:SECRET, got {item[:12]!r}…")
                continue
            accounts.append({"api_key": key, "secret_key": secret})
        data["accounts"] = accounts
    rate_flags = {dest: getattr(args, dest) for dest in _RATE_FLAGS}
    if any(v is not None for v in rate_flags.values()):
        limits = data.get("rate_limits")
        if limits is None:
            limits = [_plain(attrs.asdict(r)) for r in simconfig.DEFAULT_RATE_LIMITS]
        for dest, value in rate_flags.items():
            if value is None:
                continue
            kind, interval, num = _RATE_FLAGS[dest]
            for entry in limits:
                if (
                    isinstance(entry, dict)
                    and entry.get("type") == kind
                    and entry.get("interval") == interval
                    and entry.get("interval_num", 1) == num
                ):
                    entry["limit"] = value
                    break
            else:
                limits.append(
                    {"type": kind, "interval": interval, "interval_num": num, "limit": value}
                )
        data["rate_limits"] = limits
    for text in args.fault or ():
        try:
            spec = parse_fault_flag(text)
        except (ValueError, TypeError) as exc:
            problems.append(f"--fault {text!r}: {exc}")
            continue
        data.setdefault("faults", []).append(spec.to_json())
    try:
        config = simconfig.from_mapping(data, source=source, lines=lines)
    except ConfigError as exc:
        raise ConfigError([*problems, *exc.problems]) from None
    if problems:
        raise ConfigError(problems)
    return config


def _config_json(config: SimConfig) -> dict[str, Any]:
    out = _plain(attrs.asdict(config, recurse=True))
    assert isinstance(out, dict)
    out["faults"] = [spec.to_json() for spec in config.faults]
    return out


async def _serve(config: SimConfig) -> None:
    server = SimServer(config)  # an unusable state file fails here, before any listener
    async with trio.open_nursery() as nursery:
        rest_url, ws_url = await nursery.start(server.run)
        print(f"tradingd sim: REST {rest_url}  streams {ws_url}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s; stopping the simulator", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(args: argparse.Namespace) -> int:
    """Run ``tradingd sim`` with parsed arguments; returns the exit status."""
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"tradingd sim: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        print(json.dumps(_config_json(config), indent=2, sort_keys=True))
        return EXIT_OK
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=getattr(logging, args.log_level.upper()),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        trio.run(_serve, config)
    except KeyboardInterrupt:
        return EXIT_OK
    except StateFileError as exc:
        print(f"tradingd sim: state file: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"tradingd sim: cannot listen: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
