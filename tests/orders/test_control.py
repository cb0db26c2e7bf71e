"""The operator commands of the order pipeline (:mod:`daemon.orders.control`).

:func:`handle_orders_command` runs against the real pipeline (real store,
client and simulator); the shared parsing and error mapping are checked
directly, with hypothesis where the input space is wide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from daemon.errors import RiskRejectedError, StoreError
from daemon.orders.control import (
    MAX_LIST_LIMIT,
    NO_ACCOUNTS,
    ErrorAnswer,
    OperatorInputError,
    error_answer,
    handle_orders_command,
    parse_limit,
    parse_states,
    parse_switch,
)
from daemon.orders.gateway import EntrySaturatedError, EntryUnavailableError, UnknownOrderError
from daemon.orders.service import OrdersService
from daemon.orders.state import TERMINAL_STATES, OrderState
from daemon.risk.checks import RiskReason
from daemon.risk.limits import LimitTable, RiskLimits
from daemon.store.orders import OrderStore
from tests.helpers.orders import FAST, limit_request, market_request, running_pipeline, wait_state
from tests.helpers.sim import SYMBOL, running_sim, sim_config

S = OrderState
TIMEOUT_S = 30


async def test_trading_commands_against_a_running_pipeline(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service

            async def ask(**message: Any) -> dict[str, Any]:
                return await handle_orders_command(service, {"cmd": "trading", **message})

            shown = await ask(action="show")
            assert shown["ok"] is True
            assert shown["effective"] == {"main": "ACTIVE"}
            assert (await ask())["states"]["global"]["state"] == "ACTIVE"  # show by default

            halted = await ask(action="halt", account="main", reason="fat finger")
            assert halted["ok"] is True
            assert halted["action"] == "halt"
            assert halted["persisted"] is True and halted["warning"] is None
            assert halted["states"]["accounts"]["main"] == {
                "state": "HALTED",
                "reason": "fat finger",
                "at": halted["states"]["accounts"]["main"]["at"],
            }
            with pytest.raises(RiskRejectedError) as info:
                await service.submit(limit_request("c-1"))
            assert info.value.codes == ("ACCOUNT_HALTED",)
            # Persisted: the store has the switch.
            assert ("main", "HALTED", "fat finger") in [
                row[:3] for row in await OrderStore(run.store).load_trading_states()
            ]

            assert (await ask(action="reduce-only"))["states"]["global"]["state"] == "REDUCING"
            resumed = await ask(action="resume")
            assert resumed["states"]["global"]["state"] == "ACTIVE"
            assert resumed["effective"] == {"main": "HALTED"}  # the account's own halt stays
            assert (await ask(action="resume", account="main"))["effective"] == {"main": "ACTIVE"}
            assert (await service.submit(limit_request("c-1"))).created

            for message, status, needle in (
                ({"action": "halt", "account": "nobody"}, 400, "unknown account 'nobody'"),
                ({"action": "freeze"}, 400, "unknown trading action 'freeze'"),
                ({"action": "halt", "reason": ["x"]}, 400, "reason must be a string"),
                ({"action": "halt", "account": 7}, 400, "account must be a non-empty string"),
                ({"action": 3}, 400, "action must be a string"),
            ):
                answer = await ask(**message)
                assert answer["ok"] is False, message
                assert answer["status"] == status
                assert needle in answer["error"]
            assert service.states.global_state.value == "ACTIVE"


async def test_orders_commands_against_a_running_pipeline(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service

            async def ask(**message: Any) -> dict[str, Any]:
                return await handle_orders_command(service, {"cmd": "orders", **message})

            assert await ask(action="list") == {"ok": True, "orders": []}
            lid = (await service.submit(limit_request("l-1"))).client_order_id
            mid = (await service.submit(market_request("m-1"))).client_order_id
            await wait_state(service, lid, S.ACCEPTED)
            await wait_state(service, mid, S.FILLED)

            listed = await ask(action="list")
            assert [o["client_order_id"] for o in listed["orders"]] == [mid, lid]
            only_open = await ask(action="list", states=["open"])
            assert [o["client_order_id"] for o in only_open["orders"]] == [lid]
            by_string = await ask(action="list", states="filled, canceled", account="main")
            assert [o["client_order_id"] for o in by_string["orders"]] == [mid]
            assert [
                o["client_order_id"] for o in (await ask(action="list", limit=1))["orders"]
            ] == [mid]

            shown = await ask(action="show", client_order_id=mid)
            assert shown["ok"] is True
            assert shown["order"]["state"] == "FILLED"
            assert shown["history"][0]["to"] == "PENDING"
            assert shown["fills"]

            canceled = await ask(action="cancel", client_order_id=lid)
            assert canceled["ok"] is True
            assert canceled["cancel_requested"] is True
            assert canceled["canceled_before_sending"] is False
            assert canceled["order"]["cancel_requested_at_ms"] is not None
            await wait_state(service, lid, S.CANCELED)
            again = await ask(action="cancel", client_order_id=lid)
            assert (again["cancel_requested"], again["state"]) == (False, "CANCELED")
            assert again["canceled_before_sending"] is False

            # An intent still PENDING (its venue is down) is canceled at once, unsent.
            run.venues.down = True
            pid = (await service.submit(limit_request("p-1"))).client_order_id
            local = await ask(action="cancel", client_order_id=pid)
            assert (local["cancel_requested"], local["canceled_before_sending"]) == (True, True)
            assert local["state"] == "CANCELED"
            assert (await ask(action="cancel", client_order_id=pid))["cancel_requested"] is False
            run.venues.down = False
            assert await sim.audit(pid) == []

            for message, status, needle in (
                ({"action": "show", "client_order_id": "td1-none"}, 404, "no order"),
                ({"action": "cancel", "client_order_id": "td1-none"}, 404, "no order"),
                ({"action": "show", "client_order_id": "bad id"}, 400, "client order id must"),
                ({"action": "show"}, 400, "client order id must"),
                ({"action": "list", "states": ["nope"]}, 400, "unknown order state(s) 'nope'"),
                ({"action": "list", "states": 5}, 400, "states must be a string or a list"),
                ({"action": "list", "limit": 0}, 400, f"limit must be in 1..{MAX_LIST_LIMIT}"),
                ({"action": "list", "account": 1}, 400, "account must be a string"),
                ({"action": "purge"}, 400, "unknown orders action 'purge'"),
            ):
                answer = await ask(**message)
                assert answer["ok"] is False, message
                assert answer["status"] == status, message
                assert needle in answer["error"], message

            positions = await handle_orders_command(service, {"cmd": "positions"})
            assert positions == {
                "ok": True,
                "positions": [{"account": "main", "symbol": "BTCUSDT", "quantity": "0.01000000"}],
            }
            wrong = await handle_orders_command(service, {"cmd": "positions", "account": 7})
            assert (wrong["ok"], wrong["status"]) == (False, 400)
            assert "account must be a string" in wrong["error"]


async def test_reconcile_now_reports_what_the_pass_changed(tmp_path: Path) -> None:
    """Polling and the periodic pass are off: only the requested pass learns the fill."""
    quiet = attrs.evolve(FAST, poll_interval_s=3600.0, reconcile_interval_s=3600.0)
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db", settings=quiet) as run,
        ):
            service = run.service
            lid = (await service.submit(limit_request("rc-1"))).client_order_id
            await wait_state(service, lid, S.ACCEPTED)
            await sim.control("POST", "/sim/market/clear", {"symbol": SYMBOL})
            assert await sim.market_order("SELL", "0.010")

            answer = await handle_orders_command(service, {"cmd": "reconcile"})
            assert (answer["ok"], answer["reconciled"], answer["error"]) == (True, True, None)
            assert answer["checked"] == 1 and answer["unknown_venue_orders"] == []
            [change] = answer["changed"]
            assert (change["client_order_id"], change["from"], change["to"]) == (
                lid,
                "ACCEPTED",
                "FILLED",
            )
            assert (change["executed_before"], change["executed_after"]) == ("0", "0.01000000")
            assert (await service.get(lid)).state is S.FILLED

            again = await handle_orders_command(service, {"cmd": "reconcile", "account": "main"})
            assert (again["checked"], again["changed"]) == (0, [])
            for account, needle in ((7, "account must be a string"), ("nope", "unknown account")):
                wrong = await handle_orders_command(
                    service, {"cmd": "reconcile", "account": account}
                )
                assert (wrong["ok"], wrong["status"]) == (False, 400) and needle in wrong["error"]


async def test_without_service_or_pipeline() -> None:
    answer = await handle_orders_command(None, {"cmd": "orders", "action": "list"})
    assert answer == {"ok": False, "error": NO_ACCOUNTS, "status": 503}
    answer = await handle_orders_command(None, {"cmd": "status"})
    assert answer["ok"] is False and "not an orders command" in answer["error"]

    async def open_store() -> Any:
        raise AssertionError("never run")

    idle = OrdersService(
        FAST,
        {"main": "sim"},
        LimitTable(default=RiskLimits()),
        venues=None,
        open_store=open_store,
    )
    answer = await handle_orders_command(idle, {"cmd": "orders", "action": "list"})
    assert answer["ok"] is False
    assert (answer["status"], answer["retry_after_s"]) == (503, 1.0)
    answer = await handle_orders_command(idle, {"cmd": "trading", "action": "halt"})
    assert answer["ok"] is True
    assert (answer["states"]["global"]["state"], answer["persisted"]) == ("HALTED", False)


# --------------------------------------------------------------------------- shared pieces


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (2.5, "3"), (3.0, "3")],
)
def test_retry_after_is_whole_seconds_rounded_up(retry_after_s: float, header: str) -> None:
    answer = error_answer(EntrySaturatedError("full", retry_after_s=retry_after_s))
    assert answer is not None
    assert answer.status == 503
    assert answer.headers() == (("Retry-After", header),)
    assert ErrorAnswer(404, {"error": "x"}).headers() == ()


def test_error_answer_mapping() -> None:
    reasons = [RiskReason("PRICE_TICK", "not a tick", "PRICE_FILTER"), RiskReason("X", "y")]
    risk = error_answer(RiskRejectedError(reasons))
    assert risk is not None and risk.status == 422
    assert risk.body["reasons"] == [
        {"code": "PRICE_TICK", "message": "not a tick", "filter_type": "PRICE_FILTER"},
        {"code": "X", "message": "y"},
    ]
    missing = error_answer(UnknownOrderError("td1-x"))
    assert missing is not None
    assert (missing.status, missing.body["client_order_id"]) == (404, "td1-x")
    store = error_answer(StoreError("disk I/O error"))
    assert store is not None and (store.status, store.retry_after_s) == (503, 1.0)
    down = error_answer(EntryUnavailableError("down", retry_after_s=4.0))
    assert down is not None and down.headers() == (("Retry-After", "4"),)
    assert error_answer(OperatorInputError("bad")) == ErrorAnswer(400, {"error": "bad"})
    assert error_answer(RuntimeError("a bug")) is None
    assert error_answer(ValueError("not an operator error")) is None


_STATE_NAMES = [s.value for s in OrderState]


@given(
    names=st.lists(st.sampled_from([*_STATE_NAMES, "open"]), max_size=6),
    split=st.integers(min_value=0, max_value=6),
    lower=st.booleans(),
)
def test_parse_states_any_spelling(names: list[str], split: int, lower: bool) -> None:
    spelled = [n.lower() if lower else n.upper() for n in names]
    # Some given as separate values, the rest as one comma-separated value.
    values = [*spelled[:split], ",".join(spelled[split:])]
    expected: set[OrderState] = set()
    for name in names:
        if name == "open":
            expected |= set(OrderState) - TERMINAL_STATES
        else:
            expected.add(OrderState(name))
    assert parse_states(values) == (frozenset(expected) if names else None)


def test_parse_states_lists_every_unknown_name() -> None:
    with pytest.raises(OperatorInputError, match=r"'bogus', 'nope'") as info:
        parse_states(["FILLED,bogus", "nope"])
    assert "open, PENDING" in str(info.value)
    assert parse_states([]) is None
    assert parse_states([" , "]) is None


@pytest.mark.parametrize("value", [0, -1, MAX_LIST_LIMIT + 1, "abc", "1.5", True, 2.0, [1]])
def test_parse_limit_refuses(value: object) -> None:
    with pytest.raises(OperatorInputError, match="limit must be"):
        parse_limit(value)


def test_parse_limit_accepts() -> None:
    assert parse_limit(None) == 100
    assert parse_limit(" 7 ") == 7
    assert parse_limit(MAX_LIST_LIMIT) == MAX_LIST_LIMIT


def test_parse_switch() -> None:
    assert parse_switch(None) == (None, "")
    assert parse_switch({}) == (None, "")
    assert parse_switch({"account": "a", "reason": "why"}) == ("a", "why")
    with pytest.raises(OperatorInputError) as info:
        parse_switch({"account": "", "reason": 1, "zz": 0})
    assert str(info.value) == (
        "unknown field 'zz'; account must be a non-empty string, got ''; "
        "reason must be a string, got int"
    )


def test_open_filter_is_every_non_terminal_state() -> None:
    assert parse_states(["open"]) == frozenset(
        {S.PENDING, S.SENDING, S.UNKNOWN, S.ACCEPTED, S.PARTIALLY_FILLED}
    )


def test_order_latency_is_exported_by_stage_and_quantile() -> None:
    from daemon.orders.ledger import LatencyLog  # noqa: PLC0415
    from daemon.orders.report import LATENCY_QUANTILES, _latency_samples  # noqa: PLC0415

    class _Ledger:
        commit_latency = LatencyLog()
        answer_latency = LatencyLog()

    ledger = _Ledger()
    assert _latency_samples(ledger) == []  # type: ignore[arg-type]  # nothing measured: no sample
    for ms in range(1, 101):
        ledger.commit_latency.add(ms / 1000)
    samples = dict(_latency_samples(ledger))  # type: ignore[arg-type]
    assert len(samples) == len(LATENCY_QUANTILES)
    stage = ("stage", "received_to_committed")
    assert samples[(stage, ("quantile", "0.5"))] == 0.051
    assert samples[(stage, ("quantile", "0.99"))] == 0.1
    assert samples[(stage, ("quantile", "1"))] == 0.1
    assert ledger.commit_latency.quantiles((0.5, 1.0)) == [0.051, 0.1]
