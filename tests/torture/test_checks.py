"""The torture runner's checker, schedule and report, on hand-made witnesses.

The checker is what makes a torture run worth anything: each invariant is
shown here to fire on the evidence of its violation and to stay quiet on a
clean record (the process-level proof that it sees a real duplicate is the
negative control, ``test_torture_process.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from daemon.torture.checks import Ending, check_all, counts, unknown_outcomes
from daemon.torture.faults import Stage, schedule
from daemon.torture.record import Event, Restart, ScenarioResult, Violation
from daemon.torture.report import render
from daemon.torture.setup import ACCOUNT, FAULT_KINDS, PROFILES, SYMBOL
from daemon.torture.venue_faults import VENUE_FAULTS
from daemon.torture.witness import Fill, Intent, StoreView, Trade, VenueOrder, VenueView
from daemon.torture.workload import ClientLog

P = Decimal("30000.00")
Q = Decimal("0.001")


def intent(coid: str, *, venue_order_id: int | None = 1, state: str = "FILLED") -> Intent:
    return Intent(
        client_order_id=coid,
        message_id=f"m-{coid}",
        account=ACCOUNT,
        symbol=SYMBOL,
        side="BUY",
        type="LIMIT",
        quantity=Q,
        price=P,
        state=state,
        venue_order_id=venue_order_id,
        executed=Q if state == "FILLED" else Decimal(0),
        cancel_requested=False,
    )


def trade(tid: int) -> Trade:
    return Trade(tid, P, Q, 1_700_000_000_000 + tid, False)


def clean() -> tuple[ClientLog, VenueView, StoreView, Ending]:
    """One filled order, its fill, its position, trades 10..14 captured; all agreeing."""
    log = ClientLog()
    log.accepted["m-a"] = "a"
    fill = Fill(100, 1, P, Q, True)
    venue = VenueView(
        orders=[VenueOrder(1, "a", SYMBOL, "BUY", "LIMIT", P, Q)],
        fills=[fill],
        trades={t: trade(t) for t in range(10, 15)},
    )
    store = StoreView(
        intents={"a": intent("a")},
        history={"a": [(None, "PENDING", "new", 0), ("PENDING", "SENDING", "send", 1)]},
        fills=[("a", fill)],
        positions={(ACCOUNT, SYMBOL): Q},
        trades={t: trade(t) for t in range(10, 15)},
        gaps=[],
        integrity="ok",
    )
    end = Ending(health=200, ready=True, term_code=0, capture_target=14)
    return log, venue, store, end


def names(violations: list[Violation]) -> set[str]:
    return {v.invariant for v in violations}


def test_a_clean_record_breaks_nothing() -> None:
    log, venue, store, end = clean()
    assert check_all(log, venue, store, end, []) == []


def test_a_second_venue_order_for_one_intent_is_a_duplicate() -> None:
    log, venue, store, end = clean()
    venue.orders.append(VenueOrder(2, "a", SYMBOL, "BUY", "LIMIT", P, Q))
    found = check_all(log, venue, store, end, [])
    assert "exactly-once" in names(found)
    assert "('a', 2)" in found[0].detail


def test_an_accepted_intent_missing_from_the_store_is_a_loss() -> None:
    log, venue, store, end = clean()
    log.accepted["m-b"] = "b"
    assert names(check_all(log, venue, store, end, [])) == {"no-loss"}


def test_an_order_with_other_parameters_than_its_intent_is_caught() -> None:
    log, venue, store, end = clean()
    venue.orders[0] = VenueOrder(1, "a", SYMBOL, "SELL", "LIMIT", P, Q)
    assert names(check_all(log, venue, store, end, [])) == {"order-matches"}


def test_a_venue_order_of_no_intent_and_a_missing_one_are_caught() -> None:
    log, venue, store, end = clean()
    venue.orders.append(VenueOrder(7, "stray", SYMBOL, "BUY", "LIMIT", P, Q))
    store.intents["b"] = intent("b", venue_order_id=9, state="ACCEPTED")
    found = names(check_all(log, venue, store, end, []))
    assert {"no-stray", "exactly-once"} <= found


def test_unsettled_intents_and_open_cancels_are_caught() -> None:
    log, venue, store, end = clean()
    store.intents["u"] = intent("u", venue_order_id=None, state="UNKNOWN")
    store.intents["c"] = attrs.evolve(
        intent("c", venue_order_id=None, state="ACCEPTED"), cancel_requested=True
    )
    found = check_all(log, venue, store, end, [])
    assert names(found) == {"settled"}
    assert len(found) == 2


def test_a_self_trade_is_two_executions_with_one_trade_id() -> None:
    log, venue, store, end = clean()
    store.intents["b"] = attrs.evolve(intent("b", venue_order_id=2), side="SELL")
    venue.orders.append(VenueOrder(2, "b", SYMBOL, "SELL", "LIMIT", P, Q))
    other_side = Fill(100, 2, P, Q, False)
    venue.fills.append(other_side)
    store.positions = {(ACCOUNT, SYMBOL): Decimal("0.000")}
    found = check_all(log, venue, store, end, [])
    assert [v.invariant for v in found] == ["fills", "fills"]  # not stored; b's executed
    store.fills.append(("b", other_side))
    assert check_all(log, venue, store, end, []) == []


def test_fills_and_positions_must_be_the_venues() -> None:
    log, venue, store, end = clean()
    venue.fills.append(Fill(101, 1, P, Q, True))
    found = names(check_all(log, venue, store, end, []))
    assert found == {"fills", "positions"}


def test_trades_must_equal_the_published_ones_and_holes_must_be_recorded() -> None:
    log, venue, store, end = clean()
    del store.trades[12]
    assert names(check_all(log, venue, store, end, [])) == {"trades"}
    store.gaps.append((12, 12, "open"))
    assert check_all(log, venue, store, end, []) == []
    store.trades[13] = Trade(13, P + 1, Q, 0, False)
    assert names(check_all(log, venue, store, end, [])) == {"trades"}


def test_a_capture_behind_the_venue_is_caught() -> None:
    log, venue, store, end = clean()
    end.capture_target = 20
    assert names(check_all(log, venue, store, end, [])) == {"trades"}


def test_the_ending_must_be_ready_healthy_clean_and_idempotent() -> None:
    log, venue, store, _ = clean()
    end = Ending(health=503, ready=True, term_code=1, capture_target=14)
    end.echo_mismatches["m-a"] = ("a", "z")
    found = check_all(log, venue, store, end, [])
    assert names(found) == {"ready", "same-id"}


def test_pings_while_frozen_and_unclear_disk_refusals_are_caught() -> None:
    log, venue, store, end = clean()
    events = [
        Event(0, "freeze", 1.0, {"pings_while_frozen": 1, "outcome": "watchdog kill"}),
        Event(1, "disk-full", 2.0, {"refusals": {"500 boom": 1}, "healthy_again_s": 1.0}),
        Event(2, "disk-full", 3.0, {"refusals": {"503 disk full": 2}}),
    ]
    found = check_all(log, venue, store, end, events)
    assert [v.invariant for v in found] == ["watchdog", "disk-full", "disk-full"]


def test_integrity_failures_are_reported() -> None:
    log, venue, store, end = clean()
    store.integrity = "*** in database main ***"
    assert names(check_all(log, venue, store, end, [])) == {"integrity"}


def test_unknown_outcomes_are_timed_from_the_history() -> None:
    _, _, store, _ = clean()
    store.history["a"] += [
        ("SENDING", "UNKNOWN", "timeout", 1000),
        ("UNKNOWN", "FILLED", "q", 3500),
    ]
    store.history["b"] = [(None, "PENDING", "new", 0), ("SENDING", "UNKNOWN", "t", 10)]
    assert sorted(unknown_outcomes(store)) == [(0.0, "still UNKNOWN"), (2.5, "FILLED")]


def test_the_schedule_is_a_function_of_the_seed() -> None:
    profile = PROFILES["ci"]
    first = schedule(profile, 7, 200, disk=True)
    assert first == schedule(profile, 7, 200, disk=True)
    assert first != schedule(profile, 8, 200, disk=True)
    assert set(first) == set(FAULT_KINDS)
    assert "disk-full" not in schedule(profile, 7, 200, disk=False)


def test_every_fault_kind_has_a_handler() -> None:
    for kind in FAULT_KINDS:
        assert kind in VENUE_FAULTS or callable(getattr(Stage, "_" + kind.replace("-", "_"))), kind


@pytest.mark.parametrize("ok", [True, False])
def test_results_round_trip_and_render(ok: bool) -> None:
    result = ScenarioResult(seed=5, index=0, kind="faults", elapsed_s=12.5)
    result.events.append(Event(0, "kill-after-202", 1.0, {"aim": "aimed"}))
    result.restarts.append(Restart("kill-after-202", 0.8))
    result.kills = 1
    result.counts = {
        "accepted by a client": 9,
        "venue orders": 9 if ok else 10,
        "duplicate venue orders": 0 if ok else 1,
    }
    result.unknowns = [(1.5, "FILLED")]
    if not ok:
        result.violations.append(Violation("exactly-once", "venue orders per intent > 1"))
    again = ScenarioResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    assert again.ok is ok
    control = ScenarioResult(seed=5, index=1, kind="negative-control")
    control.violations.append(Violation("exactly-once", "venue orders per intent > 1: x"))
    assert control.ok
    text = render([again, control], profile="ci", seed=5, elapsed_s=60.0, disk_faults=False)
    assert "| kill-after-202 | 1 |" in text
    assert "not run (needs root" in text
    assert "saw the duplicates" in text
    assert "| Duplicate venue orders | " + ("0" if ok else "1") + " |" in text
    assert "NautilusTrader" in text
    assert "p50 0.80 s" in text


def test_counts_show_duplicates_and_losses() -> None:
    log, venue, store, _ = clean()
    assert counts(log, venue, store)["duplicate venue orders"] == 0
    venue.orders += [VenueOrder(2, "a", SYMBOL, "BUY", "LIMIT", P, Q)] * 2
    log.accepted["m-gone"] = "gone"
    found = counts(log, venue, store)
    assert found["duplicate venue orders"] == 2
    assert found["accepted intents lost"] == 1
    assert found["state FILLED"] == 1


def test_unknown_fault_kinds_are_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "torture", "--faults", "kill-random,nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert "unknown fault kind(s) ['nope']" in done.stderr
    assert "disk-full" in done.stderr


def test_a_restricted_schedule_draws_only_those_kinds() -> None:
    only = frozenset({"freeze", "disk-full"})
    drawn = schedule(PROFILES["soak"], 3, 100, disk=True, only=only)
    assert set(drawn) == only
    assert schedule(PROFILES["soak"], 3, 100, disk=False, only=frozenset({"disk-full"})) == []


class _Exited:
    """Stands for a finished ``trio.Process``: only its exit status is read."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode


def test_only_exits_the_runner_did_not_cause_count_as_crashes(tmp_path: Path) -> None:
    from daemon.torture.procs import DaemonProc, Incarnation  # noqa: PLC0415

    daemon = DaemonProc(tmp_path, tmp_path / "c.toml", None, watchdog_s=2.0, sockdir=tmp_path)  # type: ignore[arg-type]

    def inc(n: int, code: int | None, by_runner: bool) -> Incarnation:
        proc: Any = _Exited(code)
        return Incarnation(n, proc, None, tmp_path / "log", 0.0, stopped_by_runner=by_runner)  # type: ignore[arg-type]

    daemon.incarnations = [inc(0, -9, True), inc(1, 1, False), inc(2, 0, True), inc(3, None, False)]
    assert [i.number for i in daemon.exited_on_its_own()] == [1]
