"""TradingStates: per-account and global switches, the stricter one wins."""

from __future__ import annotations

import logging
from itertools import product

import pytest

from daemon.risk import TradingState, TradingStates
from tests.helpers.clock import FakeClock

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def test_everything_starts_active() -> None:
    states = TradingStates()
    assert states.global_state is ACTIVE
    assert states.account_state("a") is ACTIVE
    assert states.effective("a") is ACTIVE
    assert states.accounts() == {}


@pytest.mark.parametrize(("global_state", "account_state"), list(product(TradingState, repeat=2)))
def test_effective_is_the_stricter_switch(
    global_state: TradingState, account_state: TradingState
) -> None:
    states = TradingStates()
    states.set_state(global_state)
    states.set_state(account_state, "a")
    expected = max(global_state, account_state, key=lambda s: s.severity)
    assert states.effective("a") is expected
    # Another account only sees the global switch.
    assert states.effective("b") is global_state


def test_strictest_orders_states() -> None:
    assert TradingState.strictest() is ACTIVE
    assert TradingState.strictest(ACTIVE, REDUCING) is REDUCING
    assert TradingState.strictest(HALTED, REDUCING, ACTIVE) is HALTED


def test_halt_and_resume_one_account() -> None:
    states = TradingStates()
    states.halt("a", reason="fat finger")
    assert states.effective("a") is HALTED
    assert states.effective("b") is ACTIVE
    assert states.accounts() == {"a": HALTED}
    states.resume("a")
    assert states.effective("a") is ACTIVE
    assert states.accounts() == {}  # ACTIVE accounts are not stored


def test_global_resume_keeps_account_halts() -> None:
    states = TradingStates()
    states.halt("a")
    states.halt()
    assert states.effective("a") is HALTED and states.effective("b") is HALTED
    states.resume()
    assert states.effective("b") is ACTIVE
    assert states.effective("a") is HALTED  # halted on its own: stays halted
    states.resume("a")
    assert states.effective("a") is ACTIVE


def test_reduce_only_switches() -> None:
    states = TradingStates()
    states.reduce_only("a")
    assert states.effective("a") is REDUCING
    states.reduce_only()
    assert states.effective("b") is REDUCING
    states.halt("a")
    assert states.effective("a") is HALTED


def test_snapshot_names_reason_and_time() -> None:
    clock = FakeClock()
    states = TradingStates(clock=clock)
    clock.now = 12.5
    states.halt("acct-2", reason="margin call")
    clock.now = 13.0
    states.reduce_only(reason="volatility")
    assert states.snapshot() == {
        "global": {"state": "REDUCING", "reason": "volatility", "at": 13.0},
        "accounts": {"acct-2": {"state": "HALTED", "reason": "margin call", "at": 12.5}},
    }


def test_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    states = TradingStates()
    with caplog.at_level(logging.INFO, logger="tradingd.risk.state"):
        states.halt("a", reason="ops")
        states.halt("a", reason="ops again")  # no change: not logged
        states.resume("a")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "trading state of account 'a': ACTIVE -> HALTED (ops)",
        "trading state of account 'a': HALTED -> ACTIVE",
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_bad_arguments_are_refused() -> None:
    states = TradingStates()
    with pytest.raises(TypeError):
        states.set_state("HALTED", "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="account"):
        states.halt("")
    assert states.effective("a") is ACTIVE
