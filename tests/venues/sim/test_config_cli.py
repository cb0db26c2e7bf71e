"""Strict sim config loading and the ``tradingd sim`` command line."""

from __future__ import annotations

import argparse
import json
import os
import re
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from daemon.errors import ConfigError
from daemon.venues.sim import cli
from daemon.venues.sim.config import (
    DOCS_API_KEY,
    SYMBOL_PRESETS,
    LimitsConfig,
    MarketConfig,
    PercentPriceBySideConfig,
    SimConfig,
    StreamsConfig,
    SymbolConfig,
    load,
    loads,
)
from daemon.venues.sim.faults import FaultSpec

D = Decimal

GOOD = """\
rest_port = 0
ws_port = 0
maker_commission = "0.0005"

[market]
seed = 42
events_per_s = 0

[[symbols]]
symbol = "ETHBTC"
base_asset = "ETH"
quote_asset = "BTC"
start_price = "0.05"
tick_size = "0.00001"
min_price = "0.00001"
max_price = "100"
step_size = "0.0001"
min_qty = "0.0001"
max_qty = "1000"
min_notional = "0.0001"
max_notional = "100"

[[accounts]]
api_key = "abc123"
secret_key = "s3cret"
balances = { ETH = "5", BTC = 1 }

[[rate_limits]]
type = "REQUEST_WEIGHT"
interval = "MINUTE"
interval_num = 1
limit = 100

[[faults]]
kind = "rest_error"
phase = "after"
method = "POST"
path = "/api/v3/order"
count = 2
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradingd sim")
    cli.add_arguments(parser)
    return parser


def test_good_config_loads() -> None:
    config = loads(GOOD, source="sim.toml")
    assert config.maker_commission == Decimal("0.0005")
    assert config.market.seed == 42 and config.market.events_per_s == 0
    (symbol,) = config.symbols
    assert symbol.symbol == "ETHBTC" and symbol.tick_size == Decimal("0.00001")
    (account,) = config.accounts
    assert account.balances == {"ETH": Decimal("5"), "BTC": Decimal("1")}
    assert [r.limit for r in config.rate_limits] == [100]
    assert config.faults == (
        FaultSpec(kind="rest_error", phase="after", method="POST", path="/api/v3/order", count=2),
    )
    assert loads("") == SimConfig()


def test_every_problem_reported_with_line_and_key() -> None:
    text = GOOD.replace("seed = 42", "sed = 42").replace(
        'tick_size = "0.00001"', "tick_size = 0.00001"
    )
    text = text.replace("limit = 100", "limit = 0").replace('kind = "rest_error"', 'kind = "boom"')
    with pytest.raises(ConfigError) as info:
        loads(text, source="sim.toml")
    problems = info.value.problems
    assert any(
        p.startswith("sim.toml:6: market.sed: unknown key (did you mean 'seed'?)") for p in problems
    )
    assert any(
        'sim.toml:14: symbols.0.tick_size: write decimals as strings (e.g. "0.00001")' in p
        for p in problems
    )
    assert any("rate_limits.0.limit: must be >= 1" in p for p in problems)
    assert any("faults.0" in p and "unknown fault kind 'boom'" in p for p in problems)
    assert len(problems) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rest_port = 70000", "must be <= 65535"),
        ('rest_port = "80"', "expected an integer"),
        ('[[symbols]]\nsymbol = "btc"', "symbol must match"),
        ('[[symbols]]\nstart_price = "0.005"', "start_price must be within"),
        ('[[accounts]]\napi_key = "has space"', "api_key must match"),
        ('maker_commission = "1.5"', "must be < 1"),
        ('[[rate_limits]]\ninterval = "WEEK"', "must be one of"),
        ("[market]\naudit = 1", "unknown key"),
        ("rest_port = [", "TOML syntax error"),
    ],
)
def test_bad_configs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        loads(text)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load(tmp_path / "nope.toml")


def test_load_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """One reader for every config file: a FIFO must not block, a device is refused."""
    fifo = tmp_path / "sim.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load("/dev/zero")


def test_help_documents_every_knob() -> None:
    text = _parser().format_help()
    for flag in (
        "--config",
        "--print-config",
        "--host",
        "--rest-port",
        "--ws-port",
        "--symbols",
        "--seed",
        "--events-per-s",
        "--trade-probability",
        "--depth-levels",
        "--max-lots",
        "--paused",
        "--trade-retention",
        "--account",
        "--maker-commission",
        "--taker-commission",
        "--order-visibility-delay-s",
        "--audit-retention",
        "--weight-limit-1m",
        "--orders-limit-10s",
        "--orders-limit-1d",
        "--raw-requests-limit-5m",
        "--ban-after-violations",
        "--ban-s",
        "--ping-interval-s",
        "--pong-timeout-s",
        "--max-connection-s",
        "--send-queue",
        "--fault",
        "--rest-request-timeout-s",
        "--rest-max-connections",
        "--batch",
        "--first-trade-id",
        "--first-update-id",
        "--audit-trade-retention",
        "--ban-max-s",
        "--max-streams",
    ):
        assert flag in text, flag
    # Every config key is reachable from a flag, except the ones that only make sense
    # as tables in the file (symbols with their filters, accounts, rate limits, faults).
    file_only = {"symbols", "accounts", "rate_limits", "faults", "market", "streams", "limits"}
    for cls in (SimConfig, MarketConfig, StreamsConfig, LimitsConfig):
        for field in attrs.fields(cls):
            if field.name not in file_only:
                flag = "--" + field.name.replace("_", "-")
                assert flag in text, f"{cls.__name__}.{field.name} has no flag"
    for word in ("rest_timeout", "ws_malformed", "order_invisible", "/sim/faults", "/sim/audit"):
        assert word in text


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(GOOD)
    args = _parser().parse_args(
        [
            "--config",
            str(path),
            "--seed",
            "9",
            "--rest-port",
            "1234",
            "--weight-limit-1m",
            "50",
            "--orders-limit-10s",
            "3",
            "--fault",
            "kind=ws_drop,every_s=30",
            "--paused",
            "--maker-commission",
            "0.002",
        ]
    )
    config = cli.config_from_args(args)
    assert config.market.seed == 9 and config.market.paused is True
    assert config.market.events_per_s == 0  # from the file
    assert config.rest_port == 1234
    assert config.maker_commission == Decimal("0.002")
    limits = {(r.type, r.interval, r.interval_num): r.limit for r in config.rate_limits}
    assert limits == {("REQUEST_WEIGHT", "MINUTE", 1): 50, ("ORDERS", "SECOND", 10): 3}
    assert [f.kind for f in config.faults] == ["rest_error", "ws_drop"]


def test_flag_errors_are_config_errors() -> None:
    args = _parser().parse_args(
        ["--symbols", "BTCUSDT,NOPE", "--fault", "kind=bad", "--account", "nocolon", "--seed", "1"]
    )
    with pytest.raises(ConfigError) as info:
        cli.config_from_args(args)
    text = "\n".join(info.value.problems)
    assert "unknown preset 'NOPE'" in text
    assert "--fault" in text
    assert "KEY:SECRET" in text
    with pytest.raises(SystemExit):
        _parser().parse_args(["--maker-commission", "abc"])


def test_main_print_config_and_exit_codes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = _parser().parse_args(
        ["--print-config", "--symbols", "LTCBTC", "--account", "key1:secret1"]
    )
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [s["symbol"] for s in printed["symbols"]] == ["LTCBTC"]
    assert printed["symbols"][0]["tick_size"] == "0.000001"
    assert printed["accounts"][0]["api_key"] == "key1"
    assert printed["rate_limits"][0]["limit"] == 6000
    default = cli.config_from_args(_parser().parse_args([]))
    assert default.accounts[0].api_key == DOCS_API_KEY
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n")
    assert cli.main(_parser().parse_args(["--config", str(bad)])) == 2
    assert "bad.toml:1: colour: unknown key" in capsys.readouterr().err


def test_defaults_named_in_help_match_the_config() -> None:
    """The "(default)" at the end of a flag's help is the config's real default."""
    defaults = SimConfig()
    parser = _parser()
    checked = 0
    for action in parser._actions:
        if action.dest in cli._TOP:
            default = getattr(defaults, cli._TOP[action.dest])
        else:
            keys = [k for k, dest in cli._SECTIONS.items() if dest == action.dest]
            if not keys:
                continue
            section, key = keys[0]
            default = getattr(getattr(defaults, section), key)
        if isinstance(default, bool):
            continue  # a switch: its help describes it being on
        match = re.search(r"\(([^()]*)\)$", action.help or "")
        assert match, f"{action.option_strings}: help names no default"
        shown = match.group(1).removeprefix("default ").split()[0]
        if isinstance(default, str):
            assert shown == default, action.option_strings
        else:
            assert Decimal(shown) == Decimal(str(default)), (action.option_strings, default)
        checked += 1
    assert checked >= 20


def test_price_bands_by_side_table() -> None:
    """``percent_price_by_side``: lenient Binance-like defaults, a strict table, 0 = no bound."""
    default = SymbolConfig().percent_price_by_side
    assert (default.bid_multiplier_down, default.bid_multiplier_up) == (D("0.2"), D("5"))
    assert (default.ask_multiplier_down, default.ask_multiplier_up) == (D("0.2"), D("5"))
    assert default.avg_price_mins == 5
    assert default.band("BUY") == (D("0.2"), D("5")) and default.band("SELL") == (D("0.2"), D("5"))
    config = loads(
        '[[symbols]]\n[symbols.percent_price_by_side]\nbid_multiplier_up = "1.2"\n'
        'ask_multiplier_down = "0"\navg_price_mins = 1\n'
    )
    bands = config.symbols[0].percent_price_by_side
    assert bands.band("BUY") == (D("0.2"), D("1.2"))
    assert bands.band("SELL") == (None, D("5"))  # 0 disables that bound
    assert bands.avg_price_mins == 1
    # The LTCBTC preset has no upper bid bound: Binance's docs example BUY at 40x the market.
    assert SYMBOL_PRESETS["LTCBTC"].percent_price_by_side.band("BUY") == (D("0.2"), None)
    text = (
        "[[symbols]]\n[symbols.percent_price_by_side]\n"
        'bid_multiplier_upp = "2"\nask_multiplier_up = 2.5\n'
    )
    with pytest.raises(ConfigError) as info:
        loads(text, source="sim.toml")
    assert info.value.problems == (
        "sim.toml:3: symbols.0.percent_price_by_side.bid_multiplier_upp: unknown key "
        "(did you mean 'bid_multiplier_up'?)",
        "sim.toml:4: symbols.0.percent_price_by_side.ask_multiplier_up: write decimals as "
        'strings (e.g. "2.5"), not floats',
    )
    for bad, message in (
        ('ask_multiplier_down = "-1"', "ask_multiplier_down must be >= 0, got -1"),
        ('bid_multiplier_up = "0.1"', "bid_multiplier_down 0.2 is above bid_multiplier_up 0.1"),
        ('ask_multiplier_up = "1.000000001"', "more than 8 decimals"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            loads(f"[[symbols]]\npercent_price_by_side = {{ {bad} }}\n")
    # An upper bound of 0 is "no bound", never "below every lower bound".
    assert PercentPriceBySideConfig(ask_multiplier_up=D(0)).band("SELL") == (D("0.2"), None)


def test_help_names_the_default_price_bands() -> None:
    text = " ".join(_parser().format_help().split())
    bands = PercentPriceBySideConfig()
    assert "percent_price_by_side" in text and "PERCENT_PRICE_BY_SIDE" in text
    assert (
        f"BUY {bands.bid_multiplier_down}x..{bands.bid_multiplier_up}x, "
        f"SELL {bands.ask_multiplier_down}x..{bands.ask_multiplier_up}x" in text
    )
    # --symbols presets round-trip through the flags with their bands.
    args = _parser().parse_args(["--symbols", "LTCBTC,BTCUSDT"])
    config = cli.config_from_args(args)
    assert config.symbols == (SYMBOL_PRESETS["LTCBTC"], SYMBOL_PRESETS["BTCUSDT"])
