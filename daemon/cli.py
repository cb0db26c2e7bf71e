"""The ``tradingd`` command line.

::

    tradingd run --config PATH          run the daemon (systemd: Type=notify)
    tradingd check-config PATH          validate a config file; exit 2 listing every problem
    tradingd demo                       run on an embedded config (state under ./var/)
    tradingd status [--json]            ask a running daemon for its status
    tradingd reload                     reload a running daemon's config; waits for the result
    tradingd dead-letters ACTION        list / show / purge dead letters
    tradingd halt|reduce-only|resume    flip a trading switch [--account A] [--reason TEXT]
    tradingd trading                    show the trading switches
    tradingd orders ACTION              list / show / cancel orders
    tradingd integrity-check            check the store's database file
    tradingd sim                        run the Binance-protocol exchange simulator
    tradingd debug-fault KIND           test-only fault hooks (need [testing] fault_injection)

Exit codes: 0 success, 1 runtime failure (or a rejected reload), 2 invalid
configuration or usage, 3 no daemon reachable, 130 interrupted / hard stop,
141 output into a closed pipe (quietly, as ``ls | head``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import os
import secrets
import socket
import sys
import time
import types
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon import __version__, control, logs, tomlschema
from daemon import config as configmod
from daemon.app import Daemon
from daemon.config import Config
from daemon.errors import ConfigError, ControlError, SecretError, StoreError
from daemon.faults import FAULT_KINDS
from daemon.housekeeping import PRIVATE_FILE_MODE, make_private_dir
from daemon.notify import Notifier, unset_environment
from daemon.orders.ids import validate_client_order_id
from daemon.secrets import SecretRef
from daemon.store import integrity_check
from daemon.strategies import StrategySpec, load_strategies

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
#: Output into a closed pipe: 128 + SIGPIPE, as a shell reports it for ``ls | head``.
EXIT_BROKEN_PIPE = 141

DEFAULT_CONFIG = "/etc/tradingd/tradingd.toml"
DEMO_ADMIN_PORT = 8787
#: RuntimeDirectory= of systemd/tradingd.service.
SYSTEMD_RUNTIME_DIR = "/run/tradingd"

log = logging.getLogger("tradingd.cli")


class _LazyParser(argparse.ArgumentParser):
    """A subcommand's parser whose options a tool module declares, imported on first use.

    ``arguments="package.module:function"`` names the function that adds the
    options (``function(parser)``); the module is imported only when this
    subcommand's arguments are parsed (its ``--help`` included), so that
    ``tradingd run`` never imports the simulator or a benchmark.
    """

    def __init__(self, *args: Any, arguments: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        if self._arguments is not None:
            module, _, function = self._arguments.partition(":")
            self._arguments = None
            getattr(importlib.import_module(module), function)(self)
        return super().parse_known_args(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradingd",
        description="A Trio trading daemon: supervised market data and exactly-once orders.",
    )
    parser.add_argument("--version", action="version", version=f"tradingd {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_LazyParser
    )

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("path")

    p = sub.add_parser("demo", help="run on an embedded configuration until Ctrl-C")
    p.add_argument("--state-dir", default="./var", help="default ./var")
    p.add_argument(
        "--admin-port",
        type=int,
        default=DEMO_ADMIN_PORT,
        help=f"admin API port on 127.0.0.1 (default {DEMO_ADMIN_PORT}; 0 picks a free one)",
    )

    for name, text in (
        ("status", "show a running daemon's status"),
        ("reload", "reload a running daemon's configuration and wait for the result"),
    ):
        p = sub.add_parser(name, help=text)
        _add_target(p)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = sub.add_parser(
        "dead-letters",
        help="list, show or purge a running daemon's dead letters",
        description="Dead letters are messages that could not be processed (malformed "
        "frames, rows the store refused), kept durably with the error and raw payload.",
    )
    dl = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = dl.add_parser("list", help="list dead letters (oldest first)")
    q.add_argument("--source", help="only this source, e.g. marketdata.sim.stream")
    q.add_argument("--after", type=int, dest="after_id", help="page: ids after this one")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(q)
    q = dl.add_parser("show", help="one dead letter, with its payload")
    q.add_argument("id", type=int)
    _add_target(q)
    q = dl.add_parser("purge", help="delete dead letters (all given filters must match)")
    q.add_argument("--id", type=int, action="append", dest="ids", help="repeatable")
    q.add_argument("--source")
    q.add_argument("--older-than-days", type=float, help="last failure older than this")
    q.add_argument("--all", action="store_true", help="required to purge without a filter")
    _add_target(q)

    _add_order_commands(sub)

    p = sub.add_parser(
        "integrity-check",
        help="check the store's database file (SQLite integrity_check); safe while running",
    )
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--db", help="the database file (overrides the config's store path)")

    p = sub.add_parser(
        "sim",
        help="run the Binance-protocol exchange simulator",
        description="Serve the Binance Spot REST and WebSocket API subset tradingd uses, "
        "with a seeded market, matching, rate limits and fault injection.",
        arguments="daemon.venues.sim.cli:add_arguments",
    )

    p = sub.add_parser("bench", help="benchmarks (not tests): ratios against a raw baseline")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    benches.add_parser(
        "orders",
        help="order pipeline: latency vs a raw baseline, durable intents/s",
        arguments="daemon.bench.orders:add_arguments",
    )

    p = sub.add_parser(
        "debug-fault",
        help="inject a fault into a running daemon (test configurations only)",
    )
    p.add_argument("kind", choices=FAULT_KINDS)
    p.add_argument("--seconds", type=float, default=30.0, help="block-loop duration")
    _add_target(p)
    return parser


#: CLI verbs that flip a trading switch (the control socket's ``trading`` actions).
TRADING_COMMANDS = ("halt", "reduce-only", "resume")


def _add_order_commands(sub: Any) -> None:
    """``halt``/``reduce-only``/``resume``, ``trading`` and ``orders`` (control-socket clients)."""
    for name, text in (
        ("halt", "refuse new orders, of one account or all (accepted orders still proceed)"),
        ("reduce-only", "accept only orders that reduce a position, of one account or all"),
        ("resume", "accept new orders again (a global resume keeps per-account halts)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--account", help="one account (default: the switch over all accounts)")
        p.add_argument("--reason", help="why; kept with the switch, logged and persisted")
        p.add_argument("--json", action="store_true", help="print the raw JSON")
        _add_target(p)
    p = sub.add_parser("trading", help="show the trading switches and each account's state")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(p)

    p = sub.add_parser("orders", help="list, show or cancel a running daemon's orders")
    od = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = od.add_parser("list", help="orders, newest first")
    q.add_argument("--account", help="only this account")
    q.add_argument(
        "--state",
        action="append",
        dest="states",
        help="a state (FILLED, ...) or 'open' for every unfinished one; repeatable or a,b",
    )
    q.add_argument("--limit", type=int, default=50, help="default 50")
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_target(q)
    for action, text in (
        ("show", "one order with its state history and fills"),
        ("cancel", "request the cancel of an open order (idempotent)"),
    ):
        q = od.add_parser(action, help=text)
        q.add_argument("client_order_id", type=_client_order_id_arg)
        q.add_argument("--json", action="store_true", help="print the raw JSON")
        _add_target(q)


def _client_order_id_arg(text: str) -> str:
    """Check the id's format before asking the daemon (a typo is a usage error: exit 2)."""
    try:
        return validate_client_order_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--socket", help="control socket path (overrides the config's)")
    p.add_argument("--timeout", type=float, default=control.CLIENT_TIMEOUT_S, help="seconds")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``tradingd`` command; returns the exit code.

    Output into a pipe whose reader has gone (``tradingd dead-letters list |
    head``) ends the command quietly with status 141, what a shell reports for
    ``ls`` in ``ls | head`` (coreutils die by SIGPIPE: 128 + 13). The signal
    itself stays ignored, as Python sets it: the daemon must never die by it.
    """
    try:
        try:
            return _main(argv)
        finally:
            # Output still buffered is written here, where a closed pipe is caught
            # (also after argparse's --help, which exits by SystemExit).
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is
    still buffered cannot fail again (and print "Exception ignored ...")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no usable stdout at all: nothing left to protect
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(Path(args.config))
        if args.command == "check-config":
            return cmd_check_config(Path(args.path))
        if args.command == "demo":
            return cmd_demo(Path(args.state_dir), args.admin_port)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "reload":
            return cmd_reload(args)
        if args.command == "debug-fault":
            return cmd_fault(args)
        if args.command == "sim":
            from daemon.venues.sim import cli as sim_cli  # noqa: PLC0415 - not for `run`

            return sim_cli.main(args)
        if args.command == "bench":
            from daemon.bench import orders as orders_bench  # noqa: PLC0415 - not for `run`

            return orders_bench.run(args, parser)
        if args.command == "integrity-check":
            return cmd_integrity_check(args)
        if args.command == "dead-letters":
            return cmd_dead_letters(args)
        if args.command in (*TRADING_COMMANDS, "trading"):
            return cmd_trading(args)
        if args.command == "orders":
            return cmd_orders(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces choices


# ---------------------------------------------------------------------------- check-config


def cmd_check_config(path: Path) -> int:
    """Every problem of the file and of the environment, in one pass (exit 2), else a summary."""
    config, problems = configmod.check_file(path)
    if config is not None:
        try:
            # Import every enabled strategy's class: a typo must fail here, not at start.
            load_strategies(StrategySpec.from_config(n, s) for n, s in config.strategies.items())
        except ConfigError as exc:
            problems += list(exc.problems)
    if problems or config is None:
        _print_problems(problems)
        return EXIT_CONFIG
    print(configmod.summary(config))
    return EXIT_OK


def _print_problems(problems: Sequence[str]) -> None:
    print(f"invalid configuration ({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


# ---------------------------------------------------------------------------- run / demo


def cmd_run(path: Path) -> int:
    notifier = Notifier.from_environ()
    unset_environment()
    _private_umask()
    config, problems = configmod.check_file(path)
    if problems or config is None:
        _print_problems(problems)
        first = problems[0] if problems else str(path)
        notifier.status(f"invalid configuration: {first}"[:200])
        notifier.errno(errno.EINVAL)
        return EXIT_CONFIG
    return _run_daemon(config, notifier, config_path=path)


#: Environment variables through which the demo hands the simulator's account
#: to its venue (the public example key pair of Binance's API docs; not secret).
DEMO_KEY_ENV = "TRADINGD_DEMO_API_KEY"
DEMO_SECRET_ENV = "TRADINGD_DEMO_API_SECRET"


def demo_config(
    state_dir: Path, admin_port: int, sim_urls: tuple[str, str] | None = None
) -> Config:
    """The embedded configuration of ``tradingd demo``.

    The simulator as venue, capturing BTCUSDT and ETHUSDT; one account
    (``demo``) with the built-in quoting strategy placing and cancelling
    LIMIT orders through the order pipeline; an admin token in
    ``STATE_DIR/admin-token`` for ``POST /orders``.
    """
    config = configmod.defaults()
    venues = {}
    accounts: dict[str, configmod.AccountConfig] = {}
    strategies: dict[str, configmod.StrategyConfig] = {}
    marketdata = config.marketdata
    if sim_urls is not None:
        accounts["demo"] = configmod.AccountConfig(venue="sim")
        strategies["quote"] = configmod.StrategyConfig(
            class_path=DEMO_STRATEGY,
            account="demo",
            options=types.MappingProxyType(
                {
                    "symbol": "BTCUSDT",
                    "quantity": "0.001",
                    "offset_bps": 10,
                    "interval_s": 2.0,
                    "max_orders": 2,
                }
            ),
        )
        marketdata = attrs.evolve(
            marketdata, venue="sim", symbols=("BTCUSDT", "ETHUSDT"), snapshot_interval_s=10.0
        )
        venues["sim"] = configmod.VenueConfig(
            rest_url=sim_urls[0],
            ws_url=sim_urls[1],
            api_key=SecretRef("env", DEMO_KEY_ENV),
            api_secret=SecretRef("env", DEMO_SECRET_ENV),
        )
    return attrs.evolve(
        config,
        source="<demo>",
        daemon=attrs.evolve(config.daemon, state_dir=state_dir.resolve(), shutdown_timeout_s=10.0),
        admin=attrs.evolve(
            config.admin,
            listen=f"127.0.0.1:{admin_port}",
            token=SecretRef("file", str(demo_token_path(state_dir))),
        ),
        venues=types.MappingProxyType(venues),
        accounts=types.MappingProxyType(accounts),
        strategies=types.MappingProxyType(strategies),
        marketdata=marketdata,
    )


#: The demo's strategy: the built-in example.
DEMO_STRATEGY = "daemon.strategies.example:QuoteStrategy"


def demo_token_path(state_dir: Path) -> Path:
    """Where ``tradingd demo`` keeps its admin token (created at start, mode 0600)."""
    return state_dir.resolve() / "admin-token"


def _write_demo_token(path: Path) -> None:
    """A fresh token, 0600 in a 0700 state directory (created so if missing; an
    existing one open to others is warned about when the daemon prepares it)."""
    make_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        # An existing file keeps its mode through O_TRUNC, and the umask masks a new one.
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(secrets.token_urlsafe(24) + "\n")


#: The daemon's umask (``UMask=0077`` in the systemd unit): whatever it creates
#: that is not given a mode explicitly (sockets, SQLite's temporary files) is private.
DAEMON_UMASK = 0o077


def _private_umask() -> None:
    os.umask(DAEMON_UMASK)


def cmd_demo(state_dir: Path, admin_port: int) -> int:
    """The daemon and an in-process exchange simulator, in one process."""
    if admin_port and not _port_free("127.0.0.1", admin_port):
        print(
            f"port {admin_port} is busy; the admin API will use a free port instead",
            file=sys.stderr,
        )
        admin_port = 0
    _private_umask()
    _write_demo_token(demo_token_path(state_dir))
    problems = configmod.check_environment(demo_config(state_dir, admin_port))
    if problems:
        _print_problems(problems)
        return EXIT_CONFIG
    notifier = Notifier.from_environ()
    unset_environment()
    from daemon.venues.sim.config import SimConfig  # noqa: PLC0415 - not for `run`
    from daemon.venues.sim.server import serve_sim  # noqa: PLC0415 - not for `run`

    sim_config = SimConfig(rest_port=0, ws_port=0)
    account = sim_config.accounts[0]
    os.environ[DEMO_KEY_ENV] = account.api_key
    os.environ[DEMO_SECRET_ENV] = account.secret_key
    logs.setup_logging(configmod.defaults().logging)

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(serve_sim, sim_config)
            config = demo_config(state_dir, admin_port, urls)

            def banner(host: str, port: int) -> None:
                base = f"http://{host}:{port}"
                print(
                    f"\ntradingd demo running (state in {config.daemon.state_dir}).\n"
                    f"  status:    {base}/status\n  health:    {base}/health\n"
                    f"  metrics:   {base}/metrics\n"
                    f"  orders:    {base}/orders?state=open  (token: "
                    f'-H "Authorization: Bearer $(cat {demo_token_path(state_dir)})")\n'
                    f"  full:      {base}/status/full  (same token)\n"
                    f"  simulator: REST {urls[0]}  streams {urls[1]}\n"
                    "  The example strategy quotes BTCUSDT on account 'demo' "
                    "(see /status/full, orders).\n"
                    "Press Ctrl-C to stop.\n",
                    file=sys.stderr,
                    flush=True,
                )

            daemon = Daemon(config, notifier=notifier, on_admin_bound=banner)
            code = await daemon.run()
            nursery.cancel_scope.cancel()
        return code

    try:
        return trio.run(main)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        notifier.close()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _run_daemon(config: Config, notifier: Notifier, **kwargs: Any) -> int:
    logs.setup_logging(config.logging)
    try:
        daemon = Daemon(config, notifier=notifier, **kwargs)
        return trio.run(daemon.run)
    except (SecretError, ConfigError) as exc:
        # One log line a problem: the escaping of log values would fold a
        # multi-line message into one line of "\n".
        for problem in exc.problems if isinstance(exc, ConfigError) else (str(exc),):
            log.error("%s", problem)
        notifier.errno(errno.EINVAL)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        # Ctrl-C before the signal handler was installed (or after it was removed).
        return EXIT_INTERRUPTED
    finally:
        notifier.close()


# ---------------------------------------------------------------------------- control clients


def _socket_of(args: argparse.Namespace) -> Path:
    """The control socket to talk to.

    The config file is only used to *find* the socket, and must not have to be
    valid: ``tradingd reload`` after a bad edit has to reach the daemon so that
    the daemon rejects the file, logs why and keeps running.
    """
    if args.socket:
        return Path(args.socket)
    try:
        path = configmod.load(args.config).control_socket_path()
    except ConfigError:
        path = _lenient_socket_path(Path(args.config))
    if not path.exists() and not os.environ.get("RUNTIME_DIRECTORY"):
        # A root shell outside the unit: the unit's RuntimeDirectory= is /run/tradingd.
        under_systemd = Path(SYSTEMD_RUNTIME_DIR) / "control.sock"
        if under_systemd.exists():
            return under_systemd
    return path


def _lenient_socket_path(config_path: Path) -> Path:
    """The socket path from a config file that does not validate (best effort)."""
    raw: dict[str, Any] = {}
    try:
        text = tomlschema.read_text(config_path)
    except ConfigError:
        text = ""
    try:
        raw = tomlschema.parse(text, source=str(config_path))
    except ConfigError:
        raw = {"daemon": _daemon_keys_by_line(text)}
    section = raw.get("daemon")
    if not isinstance(section, dict):
        section = {}
    daemon = configmod.DaemonConfig()
    explicit = section.get("control_socket")
    if isinstance(explicit, str) and explicit:
        daemon = attrs.evolve(daemon, control_socket=explicit)
    state_dir = section.get("state_dir")
    if isinstance(state_dir, str) and state_dir:
        resolved = Path(state_dir)
        if not resolved.is_absolute():
            resolved = config_path.resolve().parent / resolved
        daemon = attrs.evolve(daemon, state_dir=resolved)
    return attrs.evolve(configmod.defaults(), daemon=daemon).control_socket_path()


def _daemon_keys_by_line(text: str) -> dict[str, Any]:
    """``daemon.state_dir``/``control_socket`` of a file that does not parse (e.g. a
    stray value nested too deep): each is read from its own line, if that line parses."""
    lines = text.splitlines()
    found: dict[str, Any] = {}
    for path, lineno in tomlschema.locate_keys(text).items():
        if path not in (("daemon", "state_dir"), ("daemon", "control_socket")):
            continue
        try:
            data = tomlschema.parse(lines[lineno - 1], source="<line>")
        except ConfigError:
            continue
        value = data.get(path[1], data.get("daemon", {}).get(path[1]))
        if isinstance(value, str):
            found[path[1]] = value
    return found


def _ask(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any] | None:
    try:
        answer = control.request(_socket_of(args), message, timeout_s=args.timeout)
    except ControlError as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return None
    if not isinstance(answer, dict):
        print("tradingd: unexpected answer from the daemon", file=sys.stderr)
        return None
    return answer


def cmd_reload(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "reload"})
    if answer is None:
        return EXIT_UNREACHABLE
    if answer.get("ok"):
        applied = ", ".join(answer.get("applied", [])) or "nothing changed live"
        print(f"reloaded: {applied}")
        for key in answer.get("restart_required", []):
            print(f"  needs a restart to take effect: {key}")
        return EXIT_OK
    errors = answer.get("errors") or [answer.get("error", "rejected")]
    print(
        "reload rejected; the daemon keeps running on its previous configuration:", file=sys.stderr
    )
    for problem in errors:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "status"})
    if answer is None:
        return EXIT_UNREACHABLE
    status = answer.get("status", {})
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(render_status(status))
    level = status.get("health", {}).get("level")
    return EXIT_OK if level in ("healthy", "degraded") else EXIT_FAILURE


def render_status(status: dict[str, Any]) -> str:
    """A human rendering of the status document."""
    health = status.get("health", {})
    lag = status.get("loop_lag", {})
    lines = [
        f"tradingd {status.get('version')} pid {status.get('pid')}  "
        f"{status.get('state')}  up {status.get('uptime_s', 0):.0f}s  "
        f"config {status.get('config')}",
        f"health: {health.get('level')}"
        + (f" ({'; '.join(health.get('reasons', []))})" if health.get("reasons") else ""),
        f"loop lag: p50 {lag.get('p50_ms', 0):.1f}ms  p99 {lag.get('p99_ms', 0):.1f}ms  "
        f"max {lag.get('max_ms', 0):.1f}ms",
        "supervision:",
    ]
    lines.extend(_render_tree(status.get("supervision", {}), "  "))
    queues = status.get("queues", [])
    if queues:
        lines.append("queues:")
        for q in queues:
            lines.append(f"  {q['name']:<20} {q['depth']}/{q['capacity']} ({q['overflow']})")
    last = status.get("last_reload")
    if last:
        lines.append(f"last reload: {'ok' if last['ok'] else 'REJECTED'} ({last['origin']})")
    return "\n".join(lines)


def _render_tree(tree: dict[str, Any], indent: str) -> list[str]:
    out = [f"{indent}{tree.get('name')} [{tree.get('strategy')}]"]
    for child in tree.get("children", []):
        hb = child.get("heartbeat_age_s")
        hb_text = f" heartbeat {hb:.1f}s ago" if isinstance(hb, int | float) else ""
        err = f" last error: {child['last_error']}" if child.get("last_error") else ""
        out.append(
            f"{indent}  {child.get('name'):<16} {child.get('state'):<9} "
            f"restarts {child.get('restarts', 0)}{hb_text}{err}"
        )
        if child.get("supervisor"):
            out.extend(_render_tree(child["supervisor"], indent + "    "))
    return out


def cmd_dead_letters(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {"cmd": "dead-letters", "action": args.action}
    if args.action == "list":
        message.update(source=args.source, after_id=args.after_id, limit=args.limit)
    elif args.action == "show":
        message["id"] = args.id
    else:
        before = None
        if args.older_than_days is not None:
            before = time.time() - args.older_than_days * 86_400
        message.update(ids=args.ids, source=args.source, failed_before=before, all=args.all)
    answer = _ask(args, message)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"tradingd: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILURE
    if args.action == "list":
        letters = answer.get("letters", [])
        if args.json:
            print(json.dumps(letters, indent=2, sort_keys=True))
        elif not letters:
            print("no dead letters")
        for letter in [] if args.json else letters:
            print(
                f"{letter.get('letter_id'):>6}  {letter.get('source')}  "
                f"{letter.get('error_type')}: {letter.get('error_message')}  "
                f"(attempts {letter.get('attempts')})"
            )
    elif args.action == "show":
        print(json.dumps(answer.get("letter"), indent=2, sort_keys=True))
    else:
        print(f"purged {answer.get('purged')} dead letter(s)")
    return EXIT_OK


def _print_failure(answer: dict[str, Any]) -> None:
    """The daemon's refusal on stderr, with every problem or risk reason it listed."""
    print(f"tradingd: {answer.get('error', 'failed')}", file=sys.stderr)
    for problem in answer.get("problems") or []:
        print(
            f"  {problem.get('field') or 'request'}: {problem.get('code')}: "
            f"{problem.get('message')}",
            file=sys.stderr,
        )
    for reason in answer.get("reasons") or []:
        print(f"  {reason.get('code')}: {reason.get('message')}", file=sys.stderr)
    retry = answer.get("retry_after_s")
    if retry is not None:
        print(f"  retry in {retry:g}s", file=sys.stderr)


def cmd_trading(args: argparse.Namespace) -> int:
    """``tradingd trading`` shows the switches; ``halt``/``reduce-only``/``resume`` flip one.

    Exit 0 when the switch is set (even if the store could not persist it:
    it holds until a restart, and the warning says so), 1 when refused.
    """
    message: dict[str, Any] = {"cmd": "trading", "action": "show"}
    if args.command in TRADING_COMMANDS:
        message.update(action=args.command, account=args.account, reason=args.reason)
    answer = _ask(args, message)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        _print_failure(answer)
        return EXIT_FAILURE
    if args.json:
        raw = {k: v for k, v in answer.items() if k != "ok"}
        print(json.dumps(raw, indent=2, sort_keys=True))
    else:
        if args.command in TRADING_COMMANDS:
            scope = "all accounts" if args.account is None else f"account {args.account}"
            print(f"{args.command}: {scope}")
        print(render_trading(answer))
    if answer.get("warning"):
        print(f"tradingd: warning: {answer['warning']}", file=sys.stderr)
    return EXIT_OK


def render_trading(view: dict[str, Any]) -> str:
    """The switches as set and what applies to each account, for a terminal."""
    states = view.get("states", {})

    def switch(row: dict[str, Any]) -> str:
        reason = row.get("reason")
        return f"{row.get('state')}" + (f" ({reason})" if reason else "")

    lines = [f"global switch: {switch(states.get('global', {}))}"]
    accounts = states.get("accounts", {})
    if accounts:
        lines.append("account switches:")
        lines.extend(f"  {name:<16} {switch(row)}" for name, row in accounts.items())
    effective = view.get("effective", {})
    if effective:
        lines.append("effective:")
        lines.extend(f"  {name:<16} {state}" for name, state in effective.items())
    return "\n".join(lines)


def cmd_orders(args: argparse.Namespace) -> int:
    """``tradingd orders list|show|cancel`` through the control socket."""
    message: dict[str, Any] = {"cmd": "orders", "action": args.action}
    if args.action == "list":
        message.update(account=args.account, states=args.states, limit=args.limit)
    else:
        message["client_order_id"] = args.client_order_id
    answer = _ask(args, message)
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        _print_failure(answer)
        return EXIT_FAILURE
    if args.json:
        raw = {k: v for k, v in answer.items() if k != "ok"}
        print(json.dumps(raw["orders"] if args.action == "list" else raw, indent=2, sort_keys=True))
    elif args.action == "list":
        print(render_orders(answer.get("orders", [])))
    elif args.action == "show":
        print(render_order(answer))
    elif answer.get("cancel_requested"):
        print(f"cancel requested: {answer.get('client_order_id')} (state {answer.get('state')})")
    else:
        print(
            f"{answer.get('client_order_id')} is already {answer.get('state')}; nothing to cancel"
        )
    return EXIT_OK


_ORDER_COLUMNS = (
    ("SEQ", "seq"),
    ("CLIENT_ORDER_ID", "client_order_id"),
    ("ACCOUNT", "account"),
    ("SYMBOL", "symbol"),
    ("SIDE", "side"),
    ("TYPE", "type"),
    ("QUANTITY", "quantity"),
    ("PRICE", "price"),
    ("FILLED", "executed_qty"),
    ("STATE", "state"),
)


def render_orders(orders: list[dict[str, Any]]) -> str:
    """Orders as an aligned table (newest first, as listed)."""
    if not orders:
        return "no orders"
    rows = [[h for h, _ in _ORDER_COLUMNS]]
    rows += [
        ["-" if o.get(k) is None else str(o.get(k)) for _, k in _ORDER_COLUMNS] for o in orders
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_ORDER_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _ms(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return datetime.fromtimestamp(value / 1000, tz=UTC).isoformat(timespec="milliseconds")


def render_order(details: dict[str, Any]) -> str:
    """One order, its state history and its fills, for a terminal."""
    o = details.get("order", {})
    price = f" @ {o['price']}" if o.get("price") is not None else ""
    tif = f" {o['time_in_force']}" if o.get("time_in_force") else ""
    lines = [
        f"{o.get('client_order_id')}  account {o.get('account')} on {o.get('venue')}",
        f"  {o.get('side')} {o.get('type')} {o.get('quantity')} {o.get('symbol')}{price}{tif}",
        f"  state {o.get('state')}  filled {o.get('executed_qty')} "
        f"(quote {o.get('cum_quote_qty')})  venue order id {o.get('venue_order_id') or '-'}",
        f"  message id {o.get('message_id')}  created {_ms(o.get('created_at_ms'))}  "
        f"send attempts {o.get('send_attempts')}",
    ]
    if o.get("reject_code") is not None or o.get("reject_reason"):
        lines.append(f"  rejected: {o.get('reject_code')} {o.get('reject_reason') or ''}".rstrip())
    if o.get("cancel_requested_at_ms") is not None:
        lines.append(f"  cancel requested {_ms(o['cancel_requested_at_ms'])}")
    lines.append("history:")
    for h in details.get("history", []):
        source = h.get("from") or "(new)"
        reason = f"  {h['reason']}" if h.get("reason") else ""
        lines.append(f"  {_ms(h.get('at_ms'))}  {source} -> {h.get('to')}{reason}")
    fills = details.get("fills", [])
    lines.append("fills:" if fills else "fills: none")
    for f in fills:
        lines.append(
            f"  {_ms(f.get('time_ms'))}  trade {f.get('trade_id')}  {f.get('side')} "
            f"{f.get('quantity')} @ {f.get('price')}  fee {f.get('commission')} "
            f"{f.get('commission_asset')}"
        )
    return "\n".join(lines)


def cmd_integrity_check(args: argparse.Namespace) -> int:
    """PRAGMA integrity_check (+ foreign keys) on a read-only connection."""
    if args.db:
        path = Path(args.db)
    else:
        try:
            path = configmod.load(args.config).store_path()
        except ConfigError as exc:
            _print_problems(exc.problems)
            return EXIT_CONFIG
    try:
        problems = integrity_check(path)
    except StoreError as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if problems:
        print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{path}: ok")
    return EXIT_OK


def cmd_fault(args: argparse.Namespace) -> int:
    answer = _ask(args, {"cmd": "fault", "kind": args.kind, "seconds": args.seconds})
    if answer is None:
        return EXIT_UNREACHABLE
    if not answer.get("ok"):
        print(f"tradingd: {answer.get('error')}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"fault armed: {args.kind}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
