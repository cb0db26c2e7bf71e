"""``tradingd check-venue`` against the bundled simulator (nothing here reaches the internet).

The simulator runs in process (:func:`tests.helpers.sim.running_sim`, whose wall
clock can be skewed) or as a process (:func:`tests.helpers.sim.sim_process`).
The command runs as ``tradingd`` runs it: :func:`daemon.cli.main` in a worker
thread (its own ``trio.run``, beside the test's simulator), or a real
``python -m daemon check-venue`` subprocess. Each check prints one line,
``STATUS  VENUE CHECK: detail``; the exit status is 0 when none failed, 1
when one did, 2 for a configuration or usage problem. The API key and secret
never appear in what it prints.

The example configuration ``config/examples/binance-testnet.toml`` is loaded
by the real loader and checked here too (structure and secret references; no
network).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from daemon import cli
from daemon import config as configmod
from daemon.cli.checkvenue import CLOCK_FRACTION, check_venues, venue_symbols
from daemon.secrets import resolve
from daemon.strategies.example import QuoteStrategy
from daemon.venues.binance.config import TESTNET_REST_URL, TESTNET_WS_API_URL, TESTNET_WS_URL
from daemon.venues.sim.config import (
    DOCS_API_KEY,
    DOCS_SECRET_KEY,
    MarketConfig,
    RateLimitConfig,
    SimConfig,
)
from daemon.venues.sim.server import system_clock_ms
from tests.helpers.process import child_env
from tests.helpers.sim import running_sim, sim_config, sim_process, venue_table

ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE: Final = ROOT / "config" / "examples" / "binance-testnet.toml"
#: Outer bound of each test (every check is bounded by --timeout on its own).
WAIT_S: Final = 60.0
#: --timeout of the runs: generous for a loaded machine, short for a venue that is down.
TIMEOUT: Final = "5"
WRONG_SECRET: Final = "ThisIsNotTheSecretOfTheDocsKey0123456789abcdefghijklmnopqrstuv"
CHECKS: Final = ("rest", "clock", "symbol BTCUSDT", "market stream", "ws-api", "permissions")


def running_market(**overrides: Any) -> SimConfig:
    """A simulator config whose market trades (the stream check waits for a message)."""
    return sim_config(market=MarketConfig(paused=False, events_per_s=50.0), **overrides)


def config_text(
    tmp_path: Path,
    rest_url: str,
    ws_url: str,
    *,
    name: str = "sim",
    symbols: tuple[str, ...] = ("BTCUSDT",),
    keys: bool = True,
) -> str:
    """A configuration with one venue on these URLs (the sim's docs keys as files)."""
    return (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[marketdata]\nvenue = "{name}"\nsymbols = {json.dumps(list(symbols))}\n\n'
        + venue_table(tmp_path / "secrets", rest_url, ws_url, keys=keys, name=name)
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tradingd.toml"
    path.write_text(text)
    return path


async def check_venue(
    path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[str], str]:
    """``tradingd check-venue --config PATH ARGS`` in a worker thread: (exit, lines, stderr)."""
    capsys.readouterr()
    argv = ["check-venue", "--config", str(path), "--timeout", TIMEOUT, *args]
    code = await trio.to_thread.run_sync(cli.main, argv)
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def line(lines: list[str], status: str, check: str, venue: str = "sim") -> str:
    """The one line of ``check`` (it must have ``status``)."""
    prefix = f"{status:<4}  {venue} {check}: "
    found = [text for text in lines if text.startswith(prefix)]
    assert len(found) == 1, f"no single {prefix!r} line in:\n" + "\n".join(lines)
    return found[0]


def assert_no_secrets(text: str, *secrets: str) -> None:
    for secret in (DOCS_API_KEY, DOCS_SECRET_KEY, *secrets):
        assert secret not in text


# --------------------------------------------------------------------------- all pass


async def test_every_check_passes_against_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market()) as sim:
            path = write_config(tmp_path, config_text(tmp_path, sim.rest_url, sim.ws_url))
            code, lines, err = await check_venue(path, capsys)
    output = "\n".join(lines)
    assert code == cli.EXIT_OK, output + err
    assert lines[0] == (
        f"venue sim: REST {sim.rest_url}, streams {sim.ws_url}, WebSocket API "
        f"{sim.ws_url}/ws-api/v3"
    )
    assert "ping answered in" in line(lines, "PASS", "rest")
    assert re.search(
        r"offset [+-]\d+ ms, round trip \d+ ms: \d+ ms against the 2500 ms allowed "
        r"\(50% of recvWindow 5000 ms\)",
        line(lines, "PASS", "clock"),
    )
    assert line(lines, "PASS", "symbol BTCUSDT").endswith(
        "TRADING; tick size 0.01, step size 0.00001, min notional 5"
    )
    assert "BTCUSDT trade received" in line(lines, "PASS", "market stream") or (
        "BTCUSDT depth update received" in line(lines, "PASS", "market stream")
    )
    assert "ping and time answered" in line(lines, "PASS", "ws-api")
    assert "canTrade yes, accountType SPOT, permissions SPOT" in line(lines, "PASS", "permissions")
    assert re.search(
        r"REQUEST_WEIGHT used \d+ of 6000 per 1M \(\d+%\)", line(lines, "PASS", "rate limits")
    )
    assert lines[-1] == "summary: 7 passed, 0 failed, 0 skipped: all checks passed"
    assert err == ""
    assert_no_secrets(output + err)


async def test_as_a_real_subprocess_against_the_simulator_process(tmp_path: Path) -> None:
    """``python -m daemon check-venue`` against ``tradingd sim``: exit 0, no secret printed."""
    with trio.fail_after(WAIT_S):
        async with sim_process(tmp_path, "--symbols", "BTCUSDT") as sim:
            path = write_config(tmp_path, config_text(tmp_path, sim.rest_url, sim.ws_url))
            done = await trio.run_process(
                [sys.executable, "-m", "daemon", "check-venue", "--config", str(path)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=child_env(),
                stdin=subprocess.DEVNULL,
            )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err
    lines = out.splitlines()
    for check in (*CHECKS, "rate limits"):
        line(lines, "PASS", check)
    assert lines[-1] == "summary: 7 passed, 0 failed, 0 skipped: all checks passed"
    assert_no_secrets(out + err)


# --------------------------------------------------------------------------- failures


async def test_a_wrong_secret_fails_the_permissions_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market()) as sim:
            path = write_config(tmp_path, config_text(tmp_path, sim.rest_url, sim.ws_url))
            (tmp_path / "secrets" / "sim-api-secret").write_text(WRONG_SECRET + "\n")
            code, lines, err = await check_venue(path, capsys)
    output = "\n".join(lines) + err
    assert code == cli.EXIT_FAILURE, output
    failed = line(lines, "FAIL", "permissions")
    assert "SignatureError" in failed and "is api_secret the secret of api_key?" in failed
    for check in ("rest", "clock", "symbol BTCUSDT", "market stream", "ws-api"):
        line(lines, "PASS", check)
    assert lines[-1] == "summary: 6 passed, 1 failed, 0 skipped: FAILED"
    assert_no_secrets(output, WRONG_SECRET)


async def test_an_unreadable_secret_fails_permissions_and_the_public_checks_still_run(
    tmp_path: Path,
) -> None:
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market()) as sim:
            text = config_text(tmp_path, sim.rest_url, sim.ws_url, keys=False) + (
                'api_key = { env = "CHECK_VENUE_KEY" }\n'
                'api_secret = { env = "CHECK_VENUE_SECRET" }\n'
            )
            config = configmod.loads(text)
            lines: list[str] = []
            summary = await check_venues(
                config,
                ["sim"],
                timeout_s=5,
                environ={"CHECK_VENUE_KEY": DOCS_API_KEY},
                out=lines.append,
            )
    assert not summary.ok
    assert line(lines, "FAIL", "permissions").endswith(
        "the credentials cannot be read: env 'CHECK_VENUE_SECRET': environment variable is not set"
    )
    for check in ("rest", "clock", "symbol BTCUSDT", "market stream", "ws-api", "rate limits"):
        line(lines, "PASS", check)
    assert_no_secrets("\n".join(lines))


async def test_an_unreachable_venue_fails_cleanly_in_a_subprocess(tmp_path: Path) -> None:
    """A venue that is down: one FAIL line a check, exit 1, no traceback, bounded."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write_config(
        tmp_path, config_text(tmp_path, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    )
    started = trio.current_time()
    with trio.fail_after(WAIT_S):
        done = await trio.run_process(
            [sys.executable, "-m", "daemon", "check-venue", "-c", str(path), "--timeout", "2"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=child_env(),
            stdin=subprocess.DEVNULL,
        )
    elapsed = trio.current_time() - started
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == cli.EXIT_FAILURE, out + err
    lines = out.splitlines()
    assert "connect_error, not sent" in line(lines, "FAIL", "rest")
    assert f"no connection to ws://127.0.0.1:{port}/stream?streams=btcusdt@trade" in line(
        lines, "FAIL", "market stream"
    )
    assert f"could not connect to ws://127.0.0.1:{port}/ws-api/v3" in line(lines, "FAIL", "ws-api")
    for check in ("clock", "symbols", "permissions", "rate limits"):
        assert line(lines, "SKIP", check).endswith("not checked: the REST API did not answer")
    assert lines[-1] == "summary: 0 passed, 3 failed, 4 skipped: FAILED"
    assert "Traceback" not in out + err and err == ""
    assert elapsed < 30, elapsed
    assert_no_secrets(out + err)


@pytest.mark.parametrize("skew_s", [60, -60])
async def test_a_clock_offset_beyond_recv_window_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], skew_s: int
) -> None:
    """The venue's clock a minute off ours: the clock check fails with the numbers.

    tradingd signs with the measured offset, so the signed account request still
    passes; the check says the host clock needs synchronising.
    """
    skewed = lambda: system_clock_ms() + skew_s * 1000  # noqa: E731
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market(), wall_clock=skewed) as sim:
            path = write_config(tmp_path, config_text(tmp_path, sim.rest_url, sim.ws_url))
            code, lines, _ = await check_venue(path, capsys)
    assert code == cli.EXIT_FAILURE
    failed = line(lines, "FAIL", "clock")
    match = re.search(r"offset ([+-]\d+) ms, round trip (\d+) ms: (\d+) ms against", failed)
    assert match, failed
    offset = int(match.group(1))
    assert abs(offset - skew_s * 1000) < 1000, failed
    assert int(match.group(3)) > 5000 * CLOCK_FRACTION
    assert "the 2500 ms allowed (50% of recvWindow 5000 ms)" in failed
    assert "synchronise it" in failed
    line(lines, "PASS", "permissions")
    assert lines[-1] == "summary: 6 passed, 1 failed, 0 skipped: FAILED"


async def test_an_unknown_symbol_fails_and_the_known_one_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market()) as sim:
            text = config_text(tmp_path, sim.rest_url, sim.ws_url, symbols=("NOPEUSDT", "BTCUSDT"))
            code, lines, _ = await check_venue(
                write_config(tmp_path, text), capsys, "--symbol", "ethusdt"
            )
    assert code == cli.EXIT_FAILURE
    assert line(lines, "FAIL", "symbol NOPEUSDT").endswith(
        "not listed by the venue (code -1121: Invalid symbol.)"
    )
    line(lines, "FAIL", "symbol ETHUSDT")  # --symbol, upper-cased; the sim lists BTCUSDT only
    line(lines, "PASS", "symbol BTCUSDT")
    # The stream subscribes to the first configured symbol the venue lists.
    assert "BTCUSDT" in line(lines, "PASS", "market stream")
    assert lines[-1] == "summary: 7 passed, 2 failed, 0 skipped: FAILED"


async def test_rate_limit_usage_above_the_headroom_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A weight limit of 60 per minute: the checks themselves use more than 80 % of it."""
    limits = (RateLimitConfig("REQUEST_WEIGHT", "MINUTE", 1, 60),)
    # The sim's windows are fixed minutes of its clock: start it just after a minute
    # began, so the window cannot roll over in the middle of the checks.
    start = system_clock_ms()
    shift = 60_000 - start % 60_000 + 1_000
    shifted = lambda: system_clock_ms() + shift  # noqa: E731
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market(rate_limits=limits), wall_clock=shifted) as sim:
            path = write_config(tmp_path, config_text(tmp_path, sim.rest_url, sim.ws_url))
            code, lines, _ = await check_venue(path, capsys)
    assert code == cli.EXIT_FAILURE
    failed = line(lines, "FAIL", "rate limits")
    match = re.search(r"REQUEST_WEIGHT used (\d+) of 60 per 1M \((\d+)%\)", failed)
    assert match, failed
    assert int(match.group(1)) > 60 * 0.8
    assert "above 80% of a limit: REQUEST_WEIGHT per 1M at" in failed
    line(lines, "PASS", "permissions")


# --------------------------------------------------------------------------- --venue


async def test_venue_selects_one_venue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market()) as sim:
            text = config_text(tmp_path, sim.rest_url, sim.ws_url) + (
                f'\n[venues.down]\nrest_url = "http://127.0.0.1:{port}"\n'
                f'ws_url = "ws://127.0.0.1:{port}"\n'
            )
            path = write_config(tmp_path, text)
            code, lines, _ = await check_venue(path, capsys, "--venue", "sim")
            assert code == cli.EXIT_OK, "\n".join(lines)
            assert not [x for x in lines if " down " in x or x.startswith("venue down")]
            assert lines[-1] == "summary: 7 passed, 0 failed, 0 skipped: all checks passed"

            code, lines, _ = await check_venue(path, capsys)
            assert code == cli.EXIT_FAILURE
            assert [x for x in lines if x.startswith("venue ")] == [
                f"venue down: REST http://127.0.0.1:{port}, streams ws://127.0.0.1:{port}, "
                f"WebSocket API ws://127.0.0.1:{port}/ws-api/v3",
                f"venue sim: REST {sim.rest_url}, streams {sim.ws_url}, WebSocket API "
                f"{sim.ws_url}/ws-api/v3",
            ]
            line(lines, "FAIL", "rest", venue="down")
            # No symbol and no credentials on "down": nothing to subscribe to, nothing to sign.
            line(lines, "SKIP", "market stream", venue="down")
            line(lines, "SKIP", "permissions", venue="down")
            line(lines, "PASS", "rest", venue="sim")

            code, lines, err = await check_venue(path, capsys, "--venue", "nope")
            assert code == cli.EXIT_CONFIG and lines == []
            assert f"{path} has no [venues.nope] table (configured: down, sim)" in err


def test_usage_and_configuration_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = write_config(tmp_path, f'[daemon]\nstate_dir = "{tmp_path}"\n')
    assert cli.main(["check-venue", "--config", str(empty)]) == cli.EXIT_CONFIG
    assert "has no [venues.NAME] table: nothing to check" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[venues.x]\nrest_url = 5\n")
    assert cli.main(["check-venue", "--config", str(bad)]) == cli.EXIT_CONFIG
    assert "invalid configuration" in capsys.readouterr().err
    for args in (["--timeout", "0"], ["--timeout", "nan"], ["--symbol", "not a symbol"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["check-venue", "--config", str(empty), *args])
        assert exit_.value.code == cli.EXIT_CONFIG


async def test_an_account_on_a_venue_without_keys_fails_permissions(tmp_path: Path) -> None:
    with trio.fail_after(WAIT_S):
        async with running_sim(running_market()) as sim:
            text = config_text(tmp_path, sim.rest_url, sim.ws_url, keys=False)
            config = configmod.loads(text + '\n[accounts.main]\nvenue = "sim"\n')
            lines: list[str] = []
            summary = await check_venues(config, ["sim"], timeout_s=5, out=lines.append)
    assert not summary.ok
    assert line(lines, "FAIL", "permissions").endswith(
        "no api_key/api_secret, but account(s) main trade on this venue"
    )


def test_the_symbols_a_configuration_uses_on_a_venue(tmp_path: Path) -> None:
    config = configmod.loads(
        f"""
[daemon]
state_dir = "{tmp_path}"
[marketdata]
venue = "a"
symbols = ["BTCUSDT", "ETHUSDT"]
[venues.a]
rest_url = "http://127.0.0.1:1"
ws_url = "ws://127.0.0.1:1"
[venues.b]
rest_url = "http://127.0.0.1:2"
ws_url = "ws://127.0.0.1:2"
[risk.position_qty_by_symbol]
LTCBTC = "1"
[accounts.main]
venue = "a"
[accounts.other]
venue = "b"
[accounts.other.risk.position_qty_by_symbol]
BNBUSDT = "1"
[strategies.quote]
class = "daemon.strategies.example:QuoteStrategy"
account = "main"
[strategies.quote.options]
symbol = "xrpusdt"
[strategies.off]
class = "daemon.strategies.example:QuoteStrategy"
enabled = false
account = "main"
[strategies.off.options]
symbol = "DOGEUSDT"
"""
    )
    assert venue_symbols(config, "a") == ["BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCBTC"]
    assert venue_symbols(config, "b") == ["LTCBTC", "BNBUSDT"]


# --------------------------------------------------------------------------- the example config


def _example_copy(tmp_path: Path) -> Path:
    """The example with its state directory under ``tmp_path`` (the rest unchanged)."""
    text = EXAMPLE.read_text()
    assert text.count('state_dir = "/var/lib/tradingd"') == 1
    copy = tmp_path / "binance-testnet.toml"
    copy.write_text(text.replace('"/var/lib/tradingd"', json.dumps(str(tmp_path / "state"))))
    return copy


def _credentials(tmp_path: Path) -> dict[str, str]:
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in ("testnet-api-key", "testnet-api-secret", "admin-token"):
        (creds / name).write_text(f"value-of-{name}\n")
    return {"CREDENTIALS_DIRECTORY": str(creds)}


def test_the_testnet_example_loads_with_the_real_loader() -> None:
    """Structure only (no network): the testnet URLs, keys by reference, small limits."""
    config = configmod.load(EXAMPLE)
    (name,) = config.venues
    venue = config.venues[name]
    assert (venue.rest_url, venue.ws_url, venue.ws_api_url) == (
        TESTNET_REST_URL,
        TESTNET_WS_URL,
        TESTNET_WS_API_URL,
    )
    assert venue.api_key is not None and venue.api_secret is not None
    assert (venue.api_key.kind, venue.api_secret.kind) == ("credential", "credential")
    assert config.marketdata.venue == name and config.marketdata.symbols == ("BTCUSDT",)
    assert [account.venue for account in config.accounts.values()] == [name]
    assert not [s for s in config.strategies.values() if s.enabled]
    risk = config.risk
    assert 0 < risk.max_orders_per_window <= 10
    assert 0 < risk.max_open_orders <= 10
    assert isinstance(risk.max_order_notional, Decimal) and risk.max_order_notional <= 100
    assert risk.position_qty_by_symbol["BTCUSDT"] <= Decimal("0.01")
    assert venue_symbols(config, name) == ["BTCUSDT"]
    # The disabled example strategy's options are valid, should someone enable it.
    (strategy,) = config.strategies.values()
    assert QuoteStrategy.validate_options(strategy.options, account=strategy.account) == []


def test_the_testnet_example_passes_check_config_once_its_credentials_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _example_copy(tmp_path)
    # Without $CREDENTIALS_DIRECTORY each reference is named, never a value.
    _, problems = configmod.check_file(copy, environ={})
    assert len(problems) == 3, problems
    for key, credential in (
        ("admin.token", "admin-token"),
        ("venues.testnet.api_key", "testnet-api-key"),
        ("venues.testnet.api_secret", "testnet-api-secret"),
    ):
        assert any(
            f": {key}: credential '{credential}': $CREDENTIALS_DIRECTORY is not set" in p
            for p in problems
        ), problems
    environ = _credentials(tmp_path)
    config, problems = configmod.check_file(copy, environ=environ)
    assert problems == [] and config is not None
    venue = config.venues["testnet"]
    assert venue.api_secret is not None
    assert resolve(venue.api_secret, environ).reveal() == "value-of-testnet-api-secret"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", environ["CREDENTIALS_DIRECTORY"])
    capsys.readouterr()
    assert cli.main(["check-config", str(copy)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "venues           testnet" in out
    assert (
        "strategy example daemon.strategies.example:QuoteStrategy on account testnet (disabled)"
        in out
    )
    assert "value-of-" not in out
