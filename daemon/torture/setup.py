"""What a torture run sets up: its profiles, the simulator's and the daemon's configuration.

* :class:`Profile` — the knobs of a run (``--profile ci|soak``): how long each
  scenario runs, how fast the clients submit, how often faults come and which.
* :func:`sim_config` — the venue: BTCUSDT with its market running (resting
  orders fill later), the default account, a REQUEST_WEIGHT window of 10
  seconds that another process on the host can exhaust (429, then a 418 ban
  of a few seconds), every accepted order and published trade kept for the
  witnesses.
* :func:`daemon_config` — tradingd: capture of BTCUSDT trades, one account,
  short ``[orders]`` timeouts (ambiguous outcomes resolve in seconds), the
  visibility contract ``query_lag_s`` given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import attrs

from daemon.bench.common import write_private
from daemon.venues.sim.config import DOCS_API_KEY, DOCS_SECRET_KEY

__all__ = [
    "ACCOUNT",
    "ADMIN_TOKEN",
    "FAULT_KINDS",
    "PROFILES",
    "RECV_WINDOW_MS",
    "STORE_FILE",
    "SYMBOL",
    "VENUE",
    "Profile",
    "daemon_config",
    "sim_config",
]

VENUE: Final = "sim"
ACCOUNT: Final = "main"
SYMBOL: Final = "BTCUSDT"
RECV_WINDOW_MS: Final = 1000
#: The admin API's bearer token (throwaway: the scenario's daemon listens on loopback).
ADMIN_TOKEN: Final = "torture-token"
#: The daemon's SQLite file, under its state directory.
STORE_FILE: Final = "torture.db"
#: The daemon's ``[orders] query_lag_s``: the longest the venue may take to show a
#: new order to queries. The contract tradingd's exactly-once promise rests on.
QUERY_LAG_S: Final = 1.0
#: REQUEST_WEIGHT per window of WEIGHT_WINDOW_S per IP: a neighbour can exhaust it.
WEIGHT_LIMIT: Final = 3000
WEIGHT_WINDOW_S: Final = 10
#: The simulator's ban after repeated violations (first ban, longest ban).
BAN_S: Final = 2.0
BAN_MAX_S: Final = 8.0

#: Every fault kind the runner knows, in the order the report lists them.
FAULT_KINDS: Final = (
    "kill-random",
    "kill-after-202",
    "kill-after-send",
    "kill-in-startup",
    "kill-in-reload",
    "reload",
    "freeze",
    "term-drain",
    "venue-outage",
    "rest-order-faults",
    "rest-query-faults",
    "rate-limit-429",
    "ip-ban-418",
    "stream-drop",
    "stream-stall",
    "stream-malformed",
    "userstream-faults",
    "visibility-lag",
    "clock-skew-within",
    "clock-skew-beyond",
    "disk-full",
)


@attrs.frozen
class Profile:
    """The knobs of one run."""

    name: str
    #: Scenarios of one run (``--duration`` can stop a soak run sooner or let it go on).
    scenarios: int
    #: How long the faults go on in each scenario (then: settle and check).
    fault_phase_s: float
    #: Pause between two faults (uniform, seconds).
    fault_gap_s: tuple[float, float]
    #: Concurrent submitting clients, and each one's pause between intents.
    submitters: int
    submit_pace_s: tuple[float, float]
    #: Weights of :data:`FAULT_KINDS` (absent: 1).
    weights: dict[str, float] = attrs.field(factory=dict)
    #: Whether the negative control runs (once per run).
    negative_control: bool = True

    def weight(self, kind: str) -> float:
        return self.weights.get(kind, 1.0)


PROFILES: Final = {
    # Bounded for the test suite: one short scenario and the negative control (~1 minute).
    "ci": Profile(
        name="ci",
        scenarios=1,
        fault_phase_s=40.0,
        fault_gap_s=(0.3, 1.2),
        submitters=3,
        submit_pace_s=(0.15, 0.9),
        weights={"freeze": 0.7, "disk-full": 0.7, "ip-ban-418": 0.5, "reload": 0.5},
    ),
    # Long scenarios back to back for --duration seconds (30 minutes by default).
    "soak": Profile(
        name="soak",
        scenarios=10_000,
        fault_phase_s=120.0,
        fault_gap_s=(0.5, 3.0),
        submitters=4,
        submit_pace_s=(0.1, 1.2),
    ),
}


def sim_config(seed: int) -> str:
    """The simulator's configuration file (TOML)."""
    limits = "".join(
        f'[[rate_limits]]\ntype = "{kind}"\ninterval = "{interval}"\n'
        f"interval_num = {num}\nlimit = {limit}\n\n"
        for kind, interval, num, limit in (
            ("REQUEST_WEIGHT", "SECOND", WEIGHT_WINDOW_S, WEIGHT_LIMIT),
            ("ORDERS", "SECOND", 10, 100_000),
            ("ORDERS", "DAY", 1, 10_000_000),
            ("RAW_REQUESTS", "MINUTE", 5, 10_000_000),
        )
    )
    return f"""\
audit_retention = 1000000
audit_trade_retention = 5000000

[market]
seed = {seed}
events_per_s = 20.0
trade_probability = 0.3
trade_retention = 1000000

[limits]
ban_after_violations = 3
ban_s = {BAN_S}
ban_max_s = {BAN_MAX_S}

[[symbols]]
symbol = "{SYMBOL}"

[[accounts]]
api_key = "{DOCS_API_KEY}"
secret_key = "{DOCS_SECRET_KEY}"
balances = {{ BTC = "1000", USDT = "100000000" }}

{limits}"""


#: ``[orders]`` of the daemon: short timeouts so that ambiguous outcomes resolve in
#: seconds. The visibility grace is section + recvWindow + skew + query lag.
ORDERS: Final[dict[str, float | int]] = {
    "send_timeout_s": 1.0,
    "section_deadline_s": 2.0,
    "drain_timeout_s": 3.0,
    "clock_skew_s": 0.0,
    "query_lag_s": QUERY_LAG_S,
    "unknown_retry_s": 0.2,
    "reconcile_interval_s": 2.0,
    "poll_interval_s": 0.5,
    "startup_reconcile_timeout_s": 30.0,
    "unwitnessed_hold_s": 2.0,
}


def daemon_config(
    workdir: Path,
    *,
    state_dir: Path,
    control_socket: Path,
    rest_url: str,
    ws_url: str,
    user_stream: bool = True,
    log_level: str = "info",
) -> Path:
    """Write tradingd's configuration (and its secret files, 0600) under ``workdir``."""
    q = json.dumps  # a JSON string is a valid TOML basic string for these values
    secrets = workdir / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    token = write_private(secrets / "admin-token", ADMIN_TOKEN + "\n")
    key = write_private(secrets / "api-key", DOCS_API_KEY + "\n")
    secret = write_private(secrets / "api-secret", DOCS_SECRET_KEY + "\n")
    orders = "\n".join(f"{k} = {v}" for k, v in ORDERS.items())
    text = f"""\
[daemon]
state_dir = {q(str(state_dir))}
control_socket = {q(str(control_socket))}
shutdown_timeout_s = 10.0
start_timeout_s = 60.0

[logging]
level = {q(log_level)}
format = "text"

[supervision]
backoff_initial_s = 0.05
backoff_max_s = 0.5
child_shutdown_grace_s = 0.5

[health]
heartbeat_interval_s = 0.2
heartbeat_tolerance = 5
status_interval_s = 0.5
blocked_loop_report_s = 0.5
min_free_disk_mb = 0

[admin]
listen = "127.0.0.1:0"
token = {{ file = {q(str(token))} }}

[store]
path = {q(STORE_FILE)}

[marketdata]
venue = {q(VENUE)}
symbols = [{q(SYMBOL)}]
chunk_size = 100
trades_queue_capacity = 10000
flush_interval_s = 0.1
backfill_limit = 1000

[orders]
{orders}

[risk]
max_orders_per_window = 0
max_open_orders = 0

[venues.{VENUE}]
rest_url = {q(rest_url)}
ws_url = {q(ws_url)}
api_key = {{ file = {q(str(key))} }}
api_secret = {{ file = {q(str(secret))} }}
recv_window_ms = {RECV_WINDOW_MS}
request_timeout_s = 2.0
user_stream = {"true" if user_stream else "false"}

[accounts.{ACCOUNT}]
venue = {q(VENUE)}
"""
    return write_private(workdir / "tradingd.toml", text)
