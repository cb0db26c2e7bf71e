"""Replaying dead letters through their normal path: safe however often it is done.

The real order pipeline and store against the simulator (127.0.0.1, port 0),
the letters in the store's own durable dead-letter table. The venue's audit
log is the independent witness that a replayed order intent reaches the venue
at most once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.cli import render
from daemon.cli.parser import build_parser
from daemon.orders.ledger import DEAD_LETTER_SOURCE
from daemon.orders.state import OrderState
from daemon.replay import handle_replay
from daemon.resilience import DeadLetter
from tests.helpers.orders import limit_request, running_pipeline, wait_state
from tests.helpers.sim import running_sim, sim_config

S = OrderState
TIMEOUT_S = 30.0
STREAM_SOURCE = "marketdata.sim.stream"


def _trade_frame(trade_id: int) -> str:
    return json.dumps(
        {
            "e": "trade",
            "E": 1_700_000_000_000,
            "s": "BTCUSDT",
            "t": trade_id,
            "p": "30000.10",
            "q": "0.00100000",
            "T": 1_700_000_000_000,
            "m": True,
            "M": True,
        }
    )


def _letter(source: str, payload: Any) -> DeadLetter:
    return DeadLetter(
        source=source,
        payload=payload,
        error_type="daemon.errors.VenueDecodeError",
        error_message="as it was",
        first_failed_at=1.0,
        last_failed_at=1.0,
    )


async def test_replayed_order_intents_reach_the_venue_at_most_once(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            letters = run.store.dead_letters
            service = run.service

            async def replay(**message: Any) -> dict[str, Any]:
                return await handle_replay(
                    {"cmd": "dead-letters", "action": "replay", **message},
                    letters=letters,
                    orders=service,
                    trades=run.store.market,
                )

            # A definitive venue refusal makes the pipeline's own dead letter.
            await sim.arm(
                kind="rest_error",
                method="POST",
                path="/api/v3/order",
                phase="before",
                status=400,
                code=-2010,
                msg="Account has insufficient balance for requested action.",
                count=1,
            )
            refused = await service.submit(limit_request("rej-1"))
            await wait_state(service, refused.client_order_id, S.REJECTED)
            [letter] = await letters.list(source=DEAD_LETTER_SOURCE)

            dry = await replay(ids=[letter.letter_id], dry_run=True)
            assert dry["dry_run"] is True
            assert [(r["outcome"], r["removed"]) for r in dry["replayed"]] == [
                ("would submit", False)
            ]
            # The stored intent answers the replay as a duplicate: nothing is sent.
            answer = await replay(ids=[letter.letter_id])
            [result] = answer["replayed"]
            assert (result["outcome"], result["removed"]) == ("duplicate", True)
            assert "already REJECTED: no order sent" in result["detail"]
            assert await letters.list(source=DEAD_LETTER_SOURCE) == []

            # An intent the store does not have (a store restored from an older backup):
            # recorded and sent once, however many times its letter is replayed.
            request = dict(limit_request("lost-1"))
            for _ in range(3):
                await letters.add(
                    DeadLetter.from_error(
                        {"intent": request, "venue": "sim"},
                        RuntimeError("lost with the old store"),
                        source=DEAD_LETTER_SOURCE,
                        now=lambda: 1.0,
                    )
                )
            answer = await replay(source=DEAD_LETTER_SOURCE)
            outcomes = [r["outcome"] for r in answer["replayed"]]
            assert outcomes[0] == "submitted" and set(outcomes[1:]) <= {"duplicate"}
            coid = (await service.submit(request)).client_order_id
            await wait_state(service, coid, S.ACCEPTED)
            assert len(await sim.audit(coid)) == 1
            assert len(await sim.audit(refused.client_order_id)) == 0
            assert await letters.list(source=DEAD_LETTER_SOURCE) == []

            missing = await replay(ids=[999_999])
            assert (missing["replayed"], missing["missing"]) == ([], [999_999])
            assert (await replay())["ok"] is False


async def test_replayed_frames_store_trades_once_and_bad_ones_stay(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            letters = run.store.dead_letters
            market = run.store.market
            good = [await letters.add(_letter(STREAM_SOURCE, _trade_frame(41))) for _ in range(2)]
            depth = await letters.add(
                _letter(
                    STREAM_SOURCE,
                    json.dumps({"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2,
                                "b": [], "a": []}),
                )
            )  # fmt: skip
            broken = await letters.add(_letter(STREAM_SOURCE, "{still not json"))
            other = await letters.add(_letter("somewhere.else", {"x": 1}))

            answer = await handle_replay(
                {"action": "replay", "source": STREAM_SOURCE},
                letters=letters,
                orders=run.service,
                trades=market,
            )
            by_id = {r["id"]: r for r in answer["replayed"]}
            assert by_id[good[0].letter_id]["outcome"] == "stored"
            assert by_id[good[1].letter_id]["outcome"] == "already stored"
            assert (by_id[depth.letter_id]["outcome"], by_id[depth.letter_id]["removed"]) == (
                "skipped",
                False,
            )
            assert by_id[broken.letter_id]["outcome"] == "still malformed"
            assert other.letter_id not in by_id
            assert await market.trade_ids("sim", "BTCUSDT", 0, 10**9) == [41]

            kept = {letter.letter_id: letter for letter in await letters.list()}
            assert set(kept) == {depth.letter_id, broken.letter_id, other.letter_id}
            assert kept[broken.letter_id].attempts == 2  # the failed replay is counted
            assert kept[broken.letter_id].error_type.endswith("NotReplayedError")

            skipped = await handle_replay(
                {"action": "replay", "ids": [other.letter_id]},
                letters=letters,
                orders=None,
                trades=None,
            )
            assert skipped["replayed"][0]["outcome"] == "skipped"


def test_the_replay_command_line_and_its_rendering() -> None:
    parser = build_parser()
    args = parser.parse_args(["dead-letters", "replay", "3", "4", "--dry-run"])
    assert (args.action, args.ids, args.source, args.dry_run) == ("replay", [3, 4], None, True)
    args = parser.parse_args(["dead-letters", "replay", "--source", "orders", "--json"])
    assert (args.ids, args.source, args.json) == ([], "orders", True)
    text = render.render_replay(
        {
            "ok": True,
            "dry_run": False,
            "replayed": [
                {
                    "id": 3,
                    "source": "orders",
                    "outcome": "duplicate",
                    "detail": "d",
                    "removed": True,
                }
            ],
            "missing": [9],
        }
    )
    assert text.splitlines() == [
        "     3  orders  duplicate: d  (removed)",
        "     9  no such dead letter",
    ]


@pytest.mark.parametrize("argv", [["dead-letters", "replay"]])
def test_replay_needs_ids_or_a_source(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from daemon import cli  # noqa: PLC0415

    assert cli.main([*argv, "--socket", "/nonexistent/sock"]) == 2
    assert "say which letters" in capsys.readouterr().err
