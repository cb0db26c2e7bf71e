"""Process-level proof of issue 18's operator commands, against a running daemon and none.

The real programs run: ``tradingd sim`` (the Binance-protocol simulator, its
market moving) and ``tradingd run`` started the way systemd starts it (the
harness of :mod:`tests.helpers.process`), capturing BTCUSDT and trading one
account on the simulator (:func:`~tests.helpers.operator.operator_config`).
Through the admin API the test submits a MARKET order (it fills: a position)
and a LIMIT order far below the market (it rests); a third intent is refused
by the venue (the simulator's ``rest_error`` fault, 400 ``-2010``, armed for one
request): an ``orders`` dead letter. A hostile frame on the market stream (the
``ws_malformed`` fault) makes a ``marketdata.sim.stream`` dead letter.

Then every new command is run as a subprocess, ``python -m daemon ... --config
PATH``, text and ``--json``, and judged by its exit code, its output and
independent witnesses — the daemon's SQLite file read-only with the standard
library, the simulator's audit log of the orders it accepted, the file system:

* ``positions``: the MARKET order's position (and, after the fill below, both);
* ``reconcile``: the resting order is filled at the venue behind the daemon's
  back (synthetic orders withdrawn, a synthetic SELL crossing it); with no user
  data stream and polling an hour apart, only the operator's pass can learn it,
  so its report names the order ACCEPTED -> FILLED, and the store agrees;
* ``dead-letters replay``: ``--dry-run`` changes no letter; the refused
  intent's replay answers "duplicate" and the venue's audit shows no order for
  it (a replay is safe); the hostile frame is "still malformed" and stays;
* ``db backup``: a private (0600), verified copy that ``db info --db`` reads;
  a second backup onto it is refused (never overwritten);
* ``db info`` on the live file; ``status``; ``status --watch 0.2 --count 2``;
  ``top --plain --count 1`` (every pane's heading).

Last the daemon is stopped (``SIGTERM``) and each command is run again:
exit 3 with one clear ``tradingd: ...`` line on stderr and nothing on stdout,
``--json`` or not (also for a stale socket file nobody listens on);
``status --watch`` and ``top`` keep asking by design, so they say "not
reachable" and exit 0; ``db info`` still reads the file.

The daemon starts once (module-scoped fixture, one ``trio.run``); the tests
below judge its recorded results. Every wait is for a condition under a
deadline; every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE
from tests.helpers.operator import (
    ACCOUNT,
    DB_NAME,
    SYMBOL,
    CliRecorder,
    LetterWitness,
    OperatorRun,
    file_mode,
    operator_config,
)
from tests.helpers.orders_process import OrderClient, OrderStoreReader, audit_orders
from tests.helpers.process import (
    SECRET,
    WAIT_S,
    DaemonProcess,
    Harness,
    await_until,
    open_harness,
    run_scenario,
)
from tests.helpers.sim import SimProcess, sim_process

pytestmark = pytest.mark.slow

#: Bound of the whole scenario (it takes 20-35 s on two busy cores).
BUDGET_S = 120.0
SEED = 18
QTY = "0.001"
#: Far below the market (~30000), above the venue's price band (x0.2): the order rests.
LIMIT_PRICE = "20000.00"
ORDER_PATH = {"method": "POST", "path": "/api/v3/order"}
MALFORMED_SOURCE = "marketdata.sim.stream"
ORDERS_SOURCE = "orders"
#: The headings of ``tradingd top``'s panes (plain text).
TOP_PANES = (
    "health:",
    "loop lag",
    "supervision",
    "queues",
    "venues",
    "orders",
    "positions",
    "dead letters",
    "slowest task steps",
)


# --------------------------------------------------------------------------- the scenario


def _intent(message_id: str, kind: str, price: str | None = None) -> dict[str, str]:
    body = {
        "message_id": message_id,
        "account": ACCOUNT,
        "symbol": SYMBOL,
        "side": "BUY",
        "type": kind,
        "quantity": QTY,
    }
    if price is not None:
        body |= {"price": price, "time_in_force": "GTC"}
    return body


async def _submit(client: OrderClient, body: dict[str, str]) -> str:
    answer = await client.submit(body)
    assert answer.status in (200, 202), answer
    return str(answer.body["client_order_id"])


async def _state_reached(
    d: DaemonProcess, reader: OrderStoreReader, coid: str, states: set[str]
) -> str:
    async def reached() -> str | None:
        assert d.proc.returncode is None, f"daemon exited {d.proc.returncode}\n{d.diag()}"
        state = await trio.to_thread.run_sync(reader.state, coid)
        return state if state in states else None

    return await await_until(
        reached, what=f"{coid} in {sorted(states)}", timeout_s=WAIT_S, poll_s=0.05, diag=d.diag
    )


async def _letter_of(d: DaemonProcess, witness: LetterWitness, source: str) -> int:
    async def found() -> int | None:
        rows = await trio.to_thread.run_sync(witness.of_source, source)
        return rows[0].letter_id if rows else None

    return await await_until(
        found, what=f"a dead letter of {source}", timeout_s=WAIT_S, poll_s=0.05, diag=d.diag
    )


async def _scenario(tmp_path: Path, sockdir: Path) -> OperatorRun:
    with trio.fail_after(BUDGET_S):
        async with (
            open_harness(tmp_path, sockdir) as h,
            sim_process(
                tmp_path, "--seed", str(SEED), "--symbols", SYMBOL, "--events-per-s", "20"
            ) as sim,
        ):
            client = OrderClient(SECRET, request_timeout_s=10.0)
            try:
                return await _body(h, sim, client)
            finally:
                await client.aclose()


async def _body(h: Harness, sim: SimProcess, client: OrderClient) -> OperatorRun:
    h.config_path.write_text(operator_config(h, sim))
    db = h.state_dir / DB_NAME
    reader = OrderStoreReader(db)
    letters = LetterWitness(db)
    cli = CliRecorder(h)
    facts: dict[str, Any] = {"db": db}
    run = OperatorRun(cli.results, facts)

    d = await h.start()
    run.daemon = d
    await d.wait_ready(timeout_s=WAIT_S + 10)
    client.base_url = await d.admin_url()

    market = await _submit(client, _intent("op-market", "MARKET"))
    facts["market"] = market
    await _state_reached(d, reader, market, {"FILLED"})
    limit = await _submit(client, _intent("op-limit", "LIMIT", LIMIT_PRICE))
    facts["limit"] = limit
    await _state_reached(d, reader, limit, {"ACCEPTED"})
    await sim.arm(
        kind="rest_error",
        phase="before",
        status=400,
        code=-2010,
        msg="Account has insufficient balance for requested action.",
        count=1,
        **ORDER_PATH,
    )
    refused = await _submit(client, _intent("op-refused", "LIMIT", LIMIT_PRICE))
    facts["refused"] = refused
    await _state_reached(d, reader, refused, {"REJECTED"})
    facts["refused_intent"] = (await trio.to_thread.run_sync(reader.intents))[refused]
    order_letter = await _letter_of(d, letters, ORDERS_SOURCE)
    await sim.arm(kind="ws_malformed", variant="huge_int", every_n=1, count=1)
    frame_letter = await _letter_of(d, letters, MALFORMED_SOURCE)
    facts["letters"] = (order_letter, frame_letter)
    facts["audit_before"] = await audit_orders(sim)

    await cli.run_all(
        {
            "positions": ("positions",),
            "positions --json": ("positions", "--json"),
            "positions --account --json": ("positions", "--account", ACCOUNT, "--json"),
            "positions --account nope": ("positions", "--account", "nope"),
        }
    )
    await _replays(cli, letters, order_letter, frame_letter, facts)
    facts["audit_after_replay"] = await audit_orders(sim)

    # The resting order fills at the venue; nothing tells the daemon (no user stream,
    # polling an hour apart) until the operator asks for a pass.
    await sim.set_market(paused=True)
    await sim.control("POST", "/sim/market/clear", {"symbol": SYMBOL})
    crossing = await sim.control(
        "POST", "/sim/market/order", {"symbol": SYMBOL, "side": "SELL", "quantity": QTY}
    )
    facts["crossing_trades"] = crossing["tradeIds"]
    await sim.set_market(paused=False)
    facts["limit_state_before_reconcile"] = await trio.to_thread.run_sync(reader.state, limit)
    await cli.run("reconcile --json", "reconcile", "--json")
    facts["limit_state_after_reconcile"] = await trio.to_thread.run_sync(reader.state, limit)
    await cli.run_all(
        {
            "reconcile": ("reconcile",),
            "reconcile --account nope": ("reconcile", "--account", "nope"),
            "positions after fill --json": ("positions", "--json"),
        }
    )
    facts["positions_table"] = await trio.to_thread.run_sync(reader.positions)

    await _backups(cli, h.tmp_path, facts)
    await _views(cli)

    facts["stop_code"] = await d.stop(timeout_s=WAIT_S)
    await _not_running(cli, h, sockdir=h.sockdir, facts=facts)
    return run


async def _replays(
    cli: CliRecorder,
    letters: LetterWitness,
    order_letter: int,
    frame_letter: int,
    facts: dict[str, Any],
) -> None:
    ids = (str(order_letter), str(frame_letter))
    facts["letters_before"] = await trio.to_thread.run_sync(letters.letters)
    await cli.run_all(
        {
            "replay --dry-run": ("dead-letters", "replay", *ids, "--dry-run"),
            "replay --dry-run --source --json": (
                "dead-letters",
                "replay",
                "--source",
                ORDERS_SOURCE,
                "--dry-run",
                "--json",
            ),
        }
    )
    facts["letters_after_dry_run"] = await trio.to_thread.run_sync(letters.letters)
    await cli.run("replay orders --json", "dead-letters", "replay", ids[0], "--json")
    await cli.run("replay frame", "dead-letters", "replay", ids[1])
    await cli.run("replay missing", "dead-letters", "replay", "999999")
    facts["letters_after_replay"] = await trio.to_thread.run_sync(letters.letters)


async def _backups(cli: CliRecorder, tmp: Path, facts: dict[str, Any]) -> None:
    backups = tmp / "backups"
    backups.mkdir()
    first, second = backups / "copy.db", backups / "copy-json.db"
    facts["backups"] = (first, second)
    await cli.run("db backup", "db", "backup", os.fspath(first))
    await cli.run("db backup --json", "db", "backup", os.fspath(second), "--json")
    facts["backup_modes"] = (file_mode(first), file_mode(second))
    await cli.run_all(
        {
            "db backup onto a file": ("db", "backup", os.fspath(first)),
            "db info --db copy --json": ("db", "info", "--db", os.fspath(first), "--json"),
            "db info --db copy": ("db", "info", "--db", os.fspath(first)),
            "db info": ("db", "info"),
            "db info --json": ("db", "info", "--json"),
        }
    )


async def _views(cli: CliRecorder) -> None:
    await cli.run_all(
        {
            "status": ("status",),
            "status --json": ("status", "--json"),
            "status --watch": ("status", "--watch", "0.2", "--count", "2"),
            "top": ("top", "--plain", "--count", "1"),
        }
    )


#: Each command once more with no daemon: (label, arguments).
NOT_RUNNING: dict[str, tuple[str, ...]] = {
    "down positions": ("positions",),
    "down positions --json": ("positions", "--json"),
    "down reconcile": ("reconcile",),
    "down reconcile --json": ("reconcile", "--json"),
    "down replay": ("dead-letters", "replay", "1"),
    "down replay --dry-run --json": (
        "dead-letters",
        "replay",
        "--source",
        ORDERS_SOURCE,
        "--dry-run",
        "--json",
    ),
    "down status": ("status",),
    "down status --json": ("status", "--json"),
}


async def _not_running(
    cli: CliRecorder, h: Harness, *, sockdir: Path, facts: dict[str, Any]
) -> None:
    # A socket file nobody listens on (a daemon killed before it could remove it).
    stale = sockdir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(os.fspath(stale))
    facts["stale_socket"] = stale
    down_backup = h.tmp_path / "backups" / "down.db"
    facts["down_backup"] = down_backup
    await cli.run_all(
        {
            **NOT_RUNNING,
            "down db backup": ("db", "backup", os.fspath(down_backup)),
            "down db backup --json": ("db", "backup", os.fspath(down_backup), "--json"),
            "stale positions": ("positions", "--socket", os.fspath(stale)),
            "stale reconcile --json": ("reconcile", "--json", "--socket", os.fspath(stale)),
            "down status --watch": ("status", "--watch", "0.2", "--count", "1"),
            "down top": ("top", "--plain", "--count", "1"),
            "down db info": ("db", "info"),
            "down db info --db --json": ("db", "info", "--db", os.fspath(facts["db"]), "--json"),
        }
    )


@pytest.fixture(scope="module")
def op_run(tmp_path_factory: pytest.TempPathFactory) -> OperatorRun:
    return run_scenario(_scenario, tmp_path_factory.mktemp("operator"))


# --------------------------------------------------------------------------- the checks


def _ok(run: OperatorRun, label: str) -> str:
    """The stdout of a command that must have succeeded."""
    result = run[label]
    assert result.returncode == EXIT_OK, f"{label}: {result}\n{run.diag()}"
    return result.stdout


def _json(run: OperatorRun, label: str) -> Any:
    return json.loads(_ok(run, label))


def test_the_scenario_played_out(op_run: OperatorRun) -> None:
    facts = op_run.facts
    assert facts["stop_code"] == 0, op_run.diag()
    audit = {a.client_order_id: a for a in facts["audit_before"]}
    assert facts["market"] in audit and facts["limit"] in audit
    assert facts["refused"] not in audit  # refused before processing: no venue order
    assert facts["refused_intent"].reject_code == -2010, facts["refused_intent"]
    assert facts["crossing_trades"], "the synthetic SELL crossed nothing"


def test_positions_show_the_filled_order(op_run: OperatorRun) -> None:
    text = _ok(op_run, "positions")
    assert text.splitlines()[0].split() == ["ACCOUNT", "SYMBOL", "QUANTITY"], text
    [row] = [line.split() for line in text.splitlines()[1:]]
    assert row[:2] == [ACCOUNT, SYMBOL] and Decimal(row[2]) == Decimal(QTY), text
    for label in ("positions --json", "positions --account --json"):
        [position] = _json(op_run, label)
        assert (position["account"], position["symbol"]) == (ACCOUNT, SYMBOL), position
        assert Decimal(position["quantity"]) == Decimal(QTY), position
    # A filter, as GET /positions?account= is (stored positions may outlive an account's
    # configuration), not a configured-account check as reconcile and halt make.
    assert _ok(op_run, "positions --account nope") == "no positions\n"
    [after] = _json(op_run, "positions after fill --json")
    assert Decimal(after["quantity"]) == 2 * Decimal(QTY), after
    assert op_run.facts["positions_table"] == {(ACCOUNT, SYMBOL): 2 * Decimal(QTY)}


def test_reconcile_reports_the_fill_it_learnt(op_run: OperatorRun) -> None:
    facts = op_run.facts
    limit = facts["limit"]
    assert facts["limit_state_before_reconcile"] == "ACCEPTED", "learnt before the pass"
    assert facts["limit_state_after_reconcile"] == "FILLED", op_run.diag()
    report = _json(op_run, "reconcile --json")
    assert (report["reconciled"], report["error"]) == (True, None), report
    assert report["checked"] == 1 and report["unknown_venue_orders"] == [], report
    [change] = report["changed"]
    assert change["client_order_id"] == limit and change["account"] == ACCOUNT, change
    assert (change["from"], change["to"]) == ("ACCEPTED", "FILLED"), change
    assert Decimal(change["executed_before"]) == 0, change
    assert Decimal(change["executed_after"]) == Decimal(QTY), change
    # A second pass: nothing live any more, nothing to change.
    text = _ok(op_run, "reconcile")
    assert text.splitlines() == [
        "reconciliation completed: 0 live order(s) checked",
        "changed: none",
        "venue orders the store does not know: none",
    ], text
    nope = op_run["reconcile --account nope"]
    assert nope.returncode == EXIT_FAILURE and nope.stdout == "", str(nope)
    assert "unknown account 'nope'" in nope.stderr, str(nope)


def test_dead_letter_replay_dry_run_changes_nothing(op_run: OperatorRun) -> None:
    facts = op_run.facts
    order_letter, frame_letter = facts["letters"]
    assert facts["letters_after_dry_run"] == facts["letters_before"]
    # Exit 1: the frame's replay would fail (it would stay), as a real replay says.
    dry = op_run["replay --dry-run"]
    assert dry.returncode == EXIT_FAILURE and dry.stderr == "", str(dry)
    text = dry.stdout
    lines = text.splitlines()
    assert lines[-1] == "(dry run: nothing changed)", text
    assert any(
        line.split()[:3] == [str(order_letter), ORDERS_SOURCE, "would"] and "submit" in line
        for line in lines
    ), text
    assert any(
        line.split()[:2] == [str(frame_letter), MALFORMED_SOURCE] and "still malformed" in line
        for line in lines
    ), text
    answer = _json(op_run, "replay --dry-run --source --json")
    assert answer["dry_run"] is True and answer["missing"] == [], answer
    [only] = answer["replayed"]
    assert (only["id"], only["outcome"], only["removed"]) == (order_letter, "would submit", False)


def test_replaying_the_refused_intent_is_a_duplicate_and_sends_nothing(
    op_run: OperatorRun,
) -> None:
    facts = op_run.facts
    order_letter, _ = facts["letters"]
    answer = _json(op_run, "replay orders --json")
    [result] = answer["replayed"]
    assert (result["id"], result["source"]) == (order_letter, ORDERS_SOURCE), result
    assert (result["ok"], result["outcome"], result["removed"]) == (True, "duplicate", True)
    assert facts["refused"] in result["detail"] and "REJECTED" in result["detail"], result
    assert order_letter not in facts["letters_after_replay"]
    # The venue's own record: no order for the refused intent, before or after the replay.
    assert facts["audit_after_replay"] == facts["audit_before"]
    assert facts["refused"] not in {a.client_order_id for a in facts["audit_after_replay"]}


def test_a_malformed_frame_stays_a_dead_letter(op_run: OperatorRun) -> None:
    facts = op_run.facts
    _, frame_letter = facts["letters"]
    result = op_run["replay frame"]
    assert result.returncode == EXIT_FAILURE, str(result)
    [line] = result.stdout.splitlines()
    assert line.split()[:2] == [str(frame_letter), MALFORMED_SOURCE], line
    assert "still malformed" in line and "(removed)" not in line, line
    before = facts["letters_before"][frame_letter]
    after = facts["letters_after_replay"][frame_letter]
    assert after.attempts == before.attempts + 1, (before, after)
    missing = op_run["replay missing"]
    assert missing.returncode == EXIT_FAILURE, str(missing)
    assert "999999  no such dead letter" in missing.stdout, str(missing)


def test_db_backup_makes_a_private_verified_copy(op_run: OperatorRun) -> None:
    facts = op_run.facts
    first, second = facts["backups"]
    text = _ok(op_run, "db backup")
    assert text.startswith(f"{first}: ") and text.rstrip().endswith("integrity_check ok"), text
    result = _json(op_run, "db backup --json")
    assert (result["ok"], result["path"], result["problems"]) == (True, str(second), []), result
    assert result["bytes"] == second.stat().st_size > 0, result
    assert facts["backup_modes"] == (0o600, 0o600)
    again = op_run["db backup onto a file"]
    assert again.returncode == EXIT_FAILURE, str(again)
    assert "backup refused" in again.stderr and "never overwrites" in again.stderr, str(again)
    info = _json(op_run, "db info --db copy --json")
    assert info["rows"]["trades"] > 0 and info["trades"][0]["symbol"] == SYMBOL, info
    # Taken after the reconciliation and the replays: both orders filled, one letter left.
    assert info["orders_by_state"] == {"FILLED": 2, "REJECTED": 1}, info
    assert info["rows"]["dead_letters"] == 1, info
    assert info["wal_bytes"] == 0, info  # a self-contained file
    assert "order intents: FILLED 2, REJECTED 1" in _ok(op_run, "db info --db copy")


def test_db_info_reads_the_live_store(op_run: OperatorRun) -> None:
    db = op_run.facts["db"]
    text = _ok(op_run, "db info")
    assert text.startswith(f"{db}: schema version "), text
    assert f"sim/{SYMBOL}: " in text and "order intents: " in text, text
    info = _json(op_run, "db info --json")
    assert info["path"] == str(db) and info["schema_version"] >= 1, info
    assert {"trades", "order_intents", "dead_letters", "positions"} <= set(info["rows"]), info


def test_status_watch_and_top_show_the_daemon(op_run: OperatorRun) -> None:
    status = _ok(op_run, "status")
    assert status.startswith("tradingd ") and "health: " in status, status
    document = _json(op_run, "status --json")
    assert document["health"]["level"] in ("healthy", "degraded"), document["health"]
    watch = _ok(op_run, "status --watch")
    headers = [line for line in watch.splitlines() if line.startswith("--- ")]
    assert len(headers) == 2 and all("every 0.2s" in line for line in headers), watch
    assert watch.count("\nhealth: ") == 2 and "\x1b" not in watch, watch
    top = _ok(op_run, "top")
    print(f"\n--- tradingd status\n{status}--- tradingd top --plain --count 1\n{top}")
    assert "\x1b" not in top, top
    missing = [pane for pane in TOP_PANES if pane not in top]
    assert not missing, f"panes missing: {missing}\n{top}"
    assert ACCOUNT in top and SYMBOL in top, top


@pytest.mark.parametrize("label", [*NOT_RUNNING, "down db backup", "down db backup --json"])
def test_every_command_says_no_daemon_is_running(op_run: OperatorRun, label: str) -> None:
    result = op_run[label]
    assert result.returncode == EXIT_UNREACHABLE, str(result)
    assert result.stdout == "", str(result)
    [line] = result.stderr.splitlines()
    assert line.startswith("tradingd: no daemon is running: ") and "does not exist" in line, line
    assert not op_run.facts["down_backup"].exists()


@pytest.mark.parametrize("label", ["stale positions", "stale reconcile --json"])
def test_a_stale_socket_is_said_so(op_run: OperatorRun, label: str) -> None:
    result = op_run[label]
    assert result.returncode == EXIT_UNREACHABLE and result.stdout == "", str(result)
    [line] = result.stderr.splitlines()
    stale = op_run.facts["stale_socket"]
    assert line == f"tradingd: no daemon is listening on {stale} (stale socket)", line


def test_the_live_views_keep_asking_a_stopped_daemon(op_run: OperatorRun) -> None:
    watch = _ok(op_run, "down status --watch")
    assert "not reachable: no daemon is running" in watch, watch
    top = _ok(op_run, "down top")
    assert "NOT REACHABLE" in top, top


def test_db_info_works_without_a_daemon(op_run: OperatorRun) -> None:
    text = _ok(op_run, "down db info")
    assert "order intents: ACCEPTED" not in text, text  # the resting order filled
    assert "order intents: FILLED 2, REJECTED 1" in text, text
    info = _json(op_run, "down db info --db --json")
    assert info["orders_by_state"] == {"FILLED": 2, "REJECTED": 1}, info
    assert info["rows"]["dead_letters"] == 1, info  # the malformed frame stays


def test_status_counts_the_fills(op_run: OperatorRun) -> None:
    document = _json(op_run, "status --json")
    counts = document["orders"]["orders"]
    # Both orders filled (the MARKET one in its answer, the LIMIT one by reconciliation).
    assert counts["fills"] >= 2, counts
    assert "  fills 0" not in _ok(op_run, "top"), "top's orders pane counts no fill"
