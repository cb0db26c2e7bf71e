"""``tradingd halt|reduce-only|resume|trading|orders`` through the real control socket.

The socket is :func:`daemon.control.serve_control` with
:func:`daemon.orders.control.handle_orders_command` as its handler (what the
daemon routes the ``trading`` and ``orders`` commands to), in front of the
real order pipeline over the simulator. The CLI runs in a worker thread, as
it would in its own process, and its stdout/stderr are captured.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon import cli
from daemon.cli import client as cli_client
from daemon.control import serve_control
from daemon.errors import RiskRejectedError
from daemon.orders.control import NO_ACCOUNTS, handle_orders_command
from daemon.orders.service import OrdersService
from daemon.orders.state import OrderState
from tests.helpers.orders import limit_request, market_request, running_pipeline, wait_state
from tests.helpers.sim import running_sim, sim_config

S = OrderState
TIMEOUT_S = 30


@asynccontextmanager
async def control_socket(path: Path, service: OrdersService | None) -> AsyncIterator[None]:
    async def handler(message: dict[str, Any]) -> dict[str, Any]:
        return await handle_orders_command(service, message)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


def runner(sock: Path) -> Any:
    """``await run("orders", "list")`` → the CLI's exit code (it runs in a thread)."""

    async def run(*argv: str) -> int:
        call = functools.partial(cli.main, [*argv, "--socket", str(sock)])
        return await trio.to_thread.run_sync(call)

    return run


async def test_trading_switches_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "c.sock"
    run = runner(sock)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as pipeline,
            control_socket(sock, pipeline.service),
        ):
            service = pipeline.service
            assert await run("trading") == cli.EXIT_OK
            out = capsys.readouterr().out
            assert out.splitlines() == [
                "global switch: ACTIVE",
                "effective:",
                "  main             ACTIVE",
            ]

            code = await run("halt", "--account", "main", "--reason", "fat finger")
            assert code == cli.EXIT_OK
            captured = capsys.readouterr()
            assert captured.out.splitlines() == [
                "halt: account main",
                "global switch: ACTIVE",
                "account switches:",
                "  main             HALTED (fat finger)",
                "effective:",
                "  main             HALTED",
            ]
            assert captured.err == ""  # persisted: no warning
            with pytest.raises(RiskRejectedError) as info:
                await service.submit(limit_request("c-1"))
            assert info.value.codes == ("ACCOUNT_HALTED",)

            assert await run("reduce-only", "--json") == cli.EXIT_OK
            answer = json.loads(capsys.readouterr().out)
            assert answer["states"]["global"]["state"] == "REDUCING"
            assert answer["effective"] == {"main": "HALTED"}
            assert answer["persisted"] is True
            assert "ok" not in answer

            assert await run("resume") == cli.EXIT_OK
            assert "resume: all accounts" in capsys.readouterr().out
            assert await run("resume", "--account", "main") == cli.EXIT_OK
            assert capsys.readouterr().out.splitlines()[-1] == "  main             ACTIVE"
            assert (await service.submit(limit_request("c-1"))).created

            assert await run("halt", "--account", "nobody") == cli.EXIT_FAILURE
            captured = capsys.readouterr()
            assert captured.out == ""
            assert "tradingd: unknown account 'nobody' (known: main)" in captured.err
            assert service.states.global_state.value == "ACTIVE"


async def test_orders_list_show_cancel_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "c.sock"
    run = runner(sock)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as pipeline,
            control_socket(sock, pipeline.service),
        ):
            service = pipeline.service
            assert await run("orders", "list") == cli.EXIT_OK
            assert capsys.readouterr().out == "no orders\n"

            lid = (await service.submit(limit_request("l-1"))).client_order_id
            mid = (await service.submit(market_request("m-1"))).client_order_id
            await wait_state(service, lid, S.ACCEPTED)
            await wait_state(service, mid, S.FILLED)

            assert await run("orders", "list") == cli.EXIT_OK
            header, first, second = capsys.readouterr().out.splitlines()
            assert header.split() == [
                "SEQ",
                "CLIENT_ORDER_ID",
                "ACCOUNT",
                "SYMBOL",
                "SIDE",
                "TYPE",
                "QUANTITY",
                "PRICE",
                "FILLED",
                "STATE",
            ]
            assert first.split()[1:] == [
                mid, "main", "BTCUSDT", "BUY", "MARKET", "0.010", "-", "0.01000000", "FILLED"
            ]  # fmt: skip
            assert second.split()[1:] == [
                lid, "main", "BTCUSDT", "BUY", "LIMIT", "0.010", "29000.00", "0", "ACCEPTED"
            ]  # fmt: skip
            assert first.index(mid) == header.index("CLIENT_ORDER_ID")  # columns line up

            assert await run("positions") == cli.EXIT_OK
            assert capsys.readouterr().out.splitlines() == [
                "ACCOUNT  SYMBOL     QUANTITY",
                "main     BTCUSDT  0.01000000",
            ]
            assert await run("positions", "--account", "main", "--json") == cli.EXIT_OK
            assert json.loads(capsys.readouterr().out) == [
                {"account": "main", "symbol": "BTCUSDT", "quantity": "0.01000000"}
            ]
            assert await run("positions", "--account", "other") == cli.EXIT_OK
            assert capsys.readouterr().out == "no positions\n"

            assert await run("reconcile") == cli.EXIT_OK
            assert capsys.readouterr().out.splitlines() == [
                "reconciliation completed: 1 live order(s) checked",
                "changed: none",
                "venue orders the store does not know: none",
            ]
            assert await run("reconcile", "--account", "ghost") == cli.EXIT_FAILURE
            assert "unknown account 'ghost'" in capsys.readouterr().err

            assert await run("orders", "list", "--state", "open", "--json") == cli.EXIT_OK
            listed = json.loads(capsys.readouterr().out)
            assert [o["client_order_id"] for o in listed] == [lid]
            code = await run("orders", "list", "--state", "filled,canceled", "--limit", "5")
            assert code == cli.EXIT_OK
            assert mid in capsys.readouterr().out

            assert await run("orders", "show", mid) == cli.EXIT_OK
            shown = capsys.readouterr().out
            assert shown.startswith(f"{mid}  account main on sim\n")
            assert "  BUY MARKET 0.010 BTCUSDT\n" in shown
            assert "  state FILLED  filled 0.01000000" in shown
            assert "(new) -> PENDING" in shown
            assert "PENDING -> SENDING" in shown
            assert "\nfills:\n" in shown and "  trade " in shown
            assert await run("orders", "show", mid, "--json") == cli.EXIT_OK
            assert json.loads(capsys.readouterr().out)["order"]["client_order_id"] == mid

            assert await run("orders", "cancel", lid) == cli.EXIT_OK
            assert capsys.readouterr().out == f"cancel requested: {lid} (state ACCEPTED)\n"
            await wait_state(service, lid, S.CANCELED)
            assert await run("orders", "cancel", lid) == cli.EXIT_OK
            assert capsys.readouterr().out == f"{lid} is already CANCELED; nothing to cancel\n"

            # The daemon's refusals: exit 1, the reason on stderr.
            assert await run("orders", "show", "td1-missing") == cli.EXIT_FAILURE
            assert "no order with client_order_id 'td1-missing'" in capsys.readouterr().err
            assert await run("orders", "list", "--state", "bogus") == cli.EXIT_FAILURE
            assert "unknown order state(s) 'bogus'" in capsys.readouterr().err
            assert await run("orders", "list", "--limit", "0") == cli.EXIT_FAILURE
            assert "limit must be in 1..1000" in capsys.readouterr().err


async def test_usage_errors_and_unreachable_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "c.sock"
    run = runner(sock)
    with trio.fail_after(TIMEOUT_S):
        # No daemon at all.
        assert await run("trading") == cli.EXIT_UNREACHABLE
        assert "no daemon is running" in capsys.readouterr().err
        assert await run("orders", "list") == cli.EXIT_UNREACHABLE
        capsys.readouterr()
        # A malformed id never reaches the daemon: argparse's usage error (exit 2).
        with pytest.raises(SystemExit) as info:
            cli.main(["orders", "show", "not an id!", "--socket", str(sock)])
        assert info.value.code == cli.EXIT_CONFIG
        assert "client order id must match" in capsys.readouterr().err
        # A daemon without [accounts].
        async with control_socket(sock, None):
            assert await run("halt") == cli.EXIT_FAILURE
            assert capsys.readouterr().err.strip() == f"tradingd: {NO_ACCOUNTS}"
            assert await run("orders", "cancel", "td1-x") == cli.EXIT_FAILURE
            assert NO_ACCOUNTS in capsys.readouterr().err


def test_failure_rendering_lists_problems_and_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    cli_client._print_failure(
        {
            "ok": False,
            "error": "rejected by pre-trade risk",
            "problems": [{"code": "MISSING_FIELD", "field": "symbol", "message": "missing"}],
            "reasons": [{"code": "TRADING_HALTED", "message": "halted for all accounts"}],
            "retry_after_s": 2.5,
        }
    )
    assert capsys.readouterr().err.splitlines() == [
        "tradingd: rejected by pre-trade risk",
        "  symbol: MISSING_FIELD: missing",
        "  TRADING_HALTED: halted for all accounts",
        "  retry in 2.5s",
    ]
