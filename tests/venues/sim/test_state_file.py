"""The simulator's state file: what a client saw survives a restart, and a bad file is an error.

In process: a simulator with ``state_file`` is run, traded against and
dropped without any shutdown (the file must already hold everything, as
after ``SIGKILL``); a second simulator built from the same file must answer
exactly as the first did, and go on — ids, balances, the market — from
where it stopped. The process-level kill test is
``test_state_file_process.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from daemon.venues.sim import cli, persist
from daemon.venues.sim.config import SYMBOL_PRESETS, MarketConfig, SimConfig
from daemon.venues.sim.persist import MAGIC, StateFileError
from daemon.venues.sim.server import SimServer
from tests.helpers.sim_api import (
    LIMIT_BUY,
    OTHER_KEY,
    OTHER_SECRET,
    TIMEOUT_S,
    Api,
    ManualClock,
    api_for,
    make_config,
    running_sim_server,
)

SYMBOLS = ("BTCUSDT", "LTCBTC")


def _config(state: Path, **overrides: Any) -> SimConfig:
    overrides.setdefault("market", MarketConfig(paused=True))
    return make_config(state_file=str(state), **overrides)


async def _observe(api: Api) -> dict[str, Any]:
    """Everything a client or the control API can read of the venue's state."""
    seen: dict[str, Any] = {
        "audit": (await api.control("GET", "/sim/audit"))["orders"],
        "balances": await api.control("GET", "/sim/balances"),
        "market": await api.control("GET", "/sim/market"),
    }
    for key, secret in ((None, None), (OTHER_KEY, OTHER_SECRET)):
        account = (await api.signed("GET", "/api/v3/account", key=key, secret=secret)).json()
        seen[f"balances {key}"] = account["balances"]
        seen[f"open {key}"] = (
            await api.signed("GET", "/api/v3/openOrders", key=key, secret=secret)
        ).json()
    for symbol in SYMBOLS:
        seen[f"trades {symbol}"] = await api.control("GET", f"/sim/trades?symbol={symbol}")
        seen[f"historical {symbol}"] = (
            await api.get("/api/v3/historicalTrades", symbol=symbol, fromId=1, limit=1000)
        ).json()
        seen[f"depth {symbol}"] = (await api.get("/api/v3/depth", symbol=symbol, limit=5000)).json()
        seen[f"myTrades {symbol}"] = (
            await api.signed("GET", "/api/v3/myTrades", symbol=symbol)
        ).json()
    return seen


async def _trade(api: Api) -> list[dict[str, Any]]:
    """Orders of every kind: resting, filled, partially filled, canceled; the market moving."""
    answers = []
    for params in (
        LIMIT_BUY | {"newClientOrderId": "rest1"},
        LIMIT_BUY | {"newClientOrderId": "rest2", "price": "21000"},
        {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.02"},
        {"symbol": "LTCBTC", "side": "SELL", "type": "MARKET", "quantity": "1"},
    ):
        response = await api.order(**params)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    canceled = await api.signed(
        "DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="rest2"
    )
    assert canceled.status_code == 200, canceled.text
    await api.control("POST", "/sim/market", {"steps": 300})
    # A user order the market will fill partially as it moves.
    best_bid = (await api.control("GET", "/sim/market"))["symbols"]["BTCUSDT"]["bestBid"]
    response = await api.order(
        symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="5",
        price=best_bid, newClientOrderId="big",
    )  # fmt: skip
    assert response.status_code == 200, response.text
    answers.append(response.json())
    await api.control("POST", "/sim/market", {"steps": 100})
    return answers


async def test_a_restarted_venue_answers_as_before_and_goes_on(tmp_path: Path) -> None:
    state = tmp_path / "venue.state"
    config = _config(state)
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(config, wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            answers = await _trade(api)
            before = await _observe(api)
            # No shutdown: the file already holds it all, as after SIGKILL.
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        async with (
            running_sim_server(config, wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            after = await _observe(api)
            assert after == before
            for answer in answers:
                now = (
                    await api.signed(
                        "GET", "/api/v3/order", symbol=answer["symbol"],
                        orderId=answer["orderId"],
                    )
                ).json()  # fmt: skip
                assert now["clientOrderId"] == answer["clientOrderId"]
            # Ids go on: the next order, trade and book update follow the last ones.
            last = before["market"]["symbols"]["BTCUSDT"]
            response = await api.order(**LIMIT_BUY)
            assert response.json()["orderId"] > max(a["orderId"] for a in answers)
            taken = await api.order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
            fills = taken.json()["fills"]
            assert fills and fills[0]["tradeId"] == last["lastTradeId"] + 1
            market = (await api.control("GET", "/sim/market"))["symbols"]["BTCUSDT"]
            assert market["lastUpdateId"] > last["lastUpdateId"]
            # The duplicate check still knows the open order restored from the file.
            again = await api.order(**LIMIT_BUY | {"newClientOrderId": "rest1"})
            assert again.json()["code"] == -2010


async def test_the_market_goes_on_exactly_as_if_never_stopped(tmp_path: Path) -> None:
    """Same seed, same actions: a restart in the middle changes nothing (books, RNG, prices)."""
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(_config(tmp_path / "a"), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await _trade(api)
            await api.control("POST", "/sim/market", {"steps": 300})
            straight = await _observe(api)
        clock = ManualClock()
        config = _config(tmp_path / "b")
        async with (
            running_sim_server(config, wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await _trade(api)
        async with (
            running_sim_server(config, wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await api.control("POST", "/sim/market", {"steps": 300})
            assert await _observe(api) == straight
            assert straight["market"]["events"] == 700


async def test_snapshots_replace_the_file_and_keep_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With compaction after every few changes, the restored state is the same."""
    monkeypatch.setattr(persist, "COMPACT_MIN_BYTES", 0)
    state = tmp_path / "venue.state"
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(_config(state), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await _trade(api)
            for _ in range(40):
                await api.control("POST", "/sim/market", {"steps": 5})
            before = await _observe(api)
            assert server.store is not None
            stats = server.store.stats()
            assert stats["snapshots"] > 3 and stats["writes"] > stats["snapshots"]
            assert (await api.control("GET", "/sim/status"))["stateFile"] == stats
        assert sorted(os.listdir(tmp_path)) == [state.name]  # no temporary file left behind
        async with (
            running_sim_server(_config(state), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            assert await _observe(api) == before


async def _write_state(state: Path) -> None:
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(_config(state), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            await _trade(api)


async def test_a_torn_last_record_is_dropped(tmp_path: Path) -> None:
    """A write cut short by the kill never returned: its record is dropped, the rest stays."""
    state = tmp_path / "venue.state"
    await _write_state(state)
    whole = state.read_bytes()
    state.write_bytes(whole + b"\x00\x00\x10\x00\x12\x34")  # a frame header, no payload
    clock = ManualClock()
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim_server(_config(state), wall_clock=clock) as server,
            api_for(server, clock=clock) as api,
        ):
            audit = (await api.control("GET", "/sim/audit"))["orders"]
            assert [r["clientOrderId"] for r in audit][:2] == ["rest1", "rest2"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"", "not a simulator state file"),
        (lambda data: b"hello world\n" + data, "not a simulator state file"),
        (
            lambda data: data.replace(MAGIC, b"tradingd-sim-state 99\n", 1),
            "written by another version",
        ),
        (lambda data: data[: len(MAGIC) + 100], "no complete snapshot"),
        # A flipped byte inside the snapshot, with records after it: not a torn tail.
        (lambda data: data[:200] + bytes([data[200] ^ 0xFF]) + data[201:], "damaged record"),
    ],
)
async def test_an_unusable_file_is_a_startup_error(
    tmp_path: Path, damage: Any, message: str
) -> None:
    state = tmp_path / "venue.state"
    await _write_state(state)
    state.write_bytes(damage(state.read_bytes()))
    with pytest.raises(StateFileError, match=message):
        SimServer(_config(state))


async def test_a_file_of_another_configuration_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "venue.state"
    await _write_state(state)
    other_symbols = _config(state, symbols=(SYMBOL_PRESETS["BTCUSDT"], SYMBOL_PRESETS["ETHUSDT"]))
    with pytest.raises(StateFileError, match=r"symbols \['BTCUSDT', 'LTCBTC'\]"):
        SimServer(other_symbols)
    retuned = attrs.evolve(SYMBOL_PRESETS["LTCBTC"], max_qty=SYMBOL_PRESETS["LTCBTC"].max_qty / 2)
    with pytest.raises(StateFileError, match="symbols"):
        SimServer(_config(state, symbols=(SYMBOL_PRESETS["BTCUSDT"], retuned)))
    with pytest.raises(StateFileError, match="accounts"):
        SimServer(_config(state, accounts=make_config().accounts[:1]))
    # Settings that are not the venue's identity may change between runs.
    SimServer(_config(state, market=MarketConfig(seed=99, events_per_s=5)))


async def test_bench_mode_is_refused_with_a_state_file(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with running_sim_server(_config(tmp_path / "s")) as server, api_for(server) as api:
            response = await api.http.post(
                "/sim/bench/trades", json={"symbol": "BTCUSDT", "count": 10}
            )
            assert response.status_code == 409
            assert "state file" in response.json()["error"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradingd sim")
    cli.add_arguments(parser)
    return parser


def test_cli_flags_set_the_state_file_and_clock_offset(tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["--state-file", str(tmp_path / "s"), "--state-fsync", "--clock-offset-ms", "-5000"]
    )
    config = cli.config_from_args(args)
    assert config.state_file == str(tmp_path / "s")
    assert config.state_fsync is True
    assert config.clock_offset_ms == -5000
    assert cli.config_from_args(_parser().parse_args([])).state_file == ""


def test_cli_refuses_a_bad_offset_and_an_unusable_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_parser().parse_args(["--clock-offset-ms", "86400001"])) == 2
    assert "clock_offset_ms" in capsys.readouterr().err
    state = tmp_path / "venue.state"
    state.write_bytes(b"garbage")
    args = _parser().parse_args(["--state-file", str(state), "--rest-port", "0", "--ws-port", "0"])
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "state file" in err and "not a simulator state file" in err
    assert state.read_bytes() == b"garbage"  # never overwritten by a fresh start
