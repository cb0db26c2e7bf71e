"""``tradingd demo``: the daemon and an in-process exchange simulator, in one process.

:func:`demo_config` is the embedded configuration (the simulator as venue, one
account quoting with the example strategy, an admin token under the state
directory); :func:`cmd_demo` starts the simulator, then the daemon on it. The
simulator is imported only inside :func:`cmd_demo` (``tradingd run`` must not
load it: ``tests/test_layering.py``).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import types
from pathlib import Path

import attrs
import trio

from daemon import config as configmod
from daemon import logs
from daemon.app import Daemon
from daemon.cli.common import EXIT_CONFIG, EXIT_INTERRUPTED
from daemon.cli.run import print_problems, private_umask
from daemon.config import Config
from daemon.housekeeping import PRIVATE_FILE_MODE, make_private_dir
from daemon.notify import Notifier, unset_environment
from daemon.secrets import SecretRef

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


def cmd_demo(state_dir: Path, admin_port: int) -> int:
    """The daemon and an in-process exchange simulator, in one process."""
    if admin_port and not _port_free("127.0.0.1", admin_port):
        print(
            f"port {admin_port} is busy; the admin API will use a free port instead",
            file=sys.stderr,
        )
        admin_port = 0
    private_umask()
    _write_demo_token(demo_token_path(state_dir))
    problems = configmod.check_environment(demo_config(state_dir, admin_port))
    if problems:
        print_problems(problems)
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
