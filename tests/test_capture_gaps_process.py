"""Process-level proof that capture loses nothing silently (issue 13, findings 11-13).

The real programs (``tradingd sim`` and ``tradingd run``, harnesses of
:mod:`tests.helpers.process` and :mod:`tests.helpers.capture`), judged by the
simulator's own record of what it published, the store read only from
outside (the SQLite file; for the open-gap case also a PostgreSQL schema,
:mod:`tests.helpers.pg_witness`), and the admin API:

* a venue configured **without an API key** still stores every trade across a
  disconnect: the catch-up's ``historicalTrades`` is security type NONE;
* a catch-up whose ``historicalTrades`` answers 5xx just before the market goes
  quiet records the missing range as an OPEN gap at once, with its exact
  bounds, and it is backfilled once the fault clears;
* while that gap is open ``/health`` is degraded with a reason and ``/status``
  and ``/metrics`` show it; healthy again once it is filled.

The market is paused throughout and moved with explicit steps, and the stream
is silenced with the simulator's ``ws_stall`` fault while trades are made:
the trades then reach the daemon only through REST. Each scenario takes a few
seconds; every wait is for a condition under a generous deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.helpers.capture import (
    DB_NAME,
    StoreReader,
    capture_config,
    capture_status,
    missing_ids,
)
from tests.helpers.pg_witness import BACKENDS, store_under_test
from tests.helpers.process import (
    SECRET,
    WAIT_S,
    DaemonProcess,
    Harness,
    StoreUnderTest,
    await_until,
    open_harness,
    parse_prometheus,
    state_dir_of,
)
from tests.helpers.sim import SimProcess, sim_process

pytestmark = pytest.mark.slow

S = "BTCUSDT"
#: Market events per step burst: ~0.3 trades each, so a burst makes dozens of trades.
STEPS = 150
BUDGET_S = 90.0
HISTORICAL = "/api/v3/historicalTrades"


class Admin:
    """The daemon's admin API, with the bearer token (harmless where none is needed)."""

    def __init__(self, base: str) -> None:
        self.base = base

    async def get(self, path: str) -> httpx2.Response:
        with trio.fail_after(WAIT_S):
            async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as client:
                return await client.get(
                    f"{self.base}{path}", headers={"Authorization": f"Bearer {SECRET}"}
                )

    async def health(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.get("/health")).json()
        return body

    async def capture(self) -> dict[str, Any]:
        md = capture_status((await self.get("/status")).json())
        assert md is not None, "no marketdata section in /status"
        return md

    async def metrics(self) -> dict[str, float]:
        return parse_prometheus((await self.get("/metrics")).text)


async def _start(h: Harness, sim: SimProcess, **config: Any) -> tuple[DaemonProcess, Admin]:
    h.config_path.write_text(
        capture_config(
            h,
            sim=sim,
            symbols=(S,),
            chunk_size=50,
            trades_queue_capacity=1000,
            **config,
        )
    )
    d = await h.start()
    await d.wait_ready(timeout_s=WAIT_S + 10)
    host, port = (await h.control({"cmd": "status"}))["status"]["admin"]["bound"]
    admin = Admin(f"http://{host}:{port}")

    async def connected() -> bool:
        return bool((await admin.capture())["feed"]["connected"])

    await await_until(connected, what="the capture stream to connect", poll_s=0.05, diag=d.diag)
    return d, admin


def _metric(samples: dict[str, float], name: str) -> float | None:
    """The sample of ``name`` for this venue and symbol, whatever the label order."""
    for key, value in samples.items():
        family, _, labels = key.partition("{")
        if family == name and set(labels.rstrip("}").split(",")) == {
            f'symbol="{S}"',
            'venue="sim"',
        }:
            return value
    return None


async def _stored_last(reader: StoreReader) -> int | None:
    if not reader.exists():
        return None
    return (await trio.to_thread.run_sync(reader.last_ids, (S,)))[S]


async def _wait_stored(d: DaemonProcess, reader: StoreReader, last: int) -> None:
    async def there() -> bool:
        if d.proc.returncode is not None:
            raise AssertionError(f"daemon exited with {d.proc.returncode}\n{d.diag()}")
        return await _stored_last(reader) == last

    await await_until(
        there, what=f"the store to hold trade {last}", timeout_s=WAIT_S, poll_s=0.05, diag=d.diag
    )


async def _live_trades(sim: SimProcess, d: DaemonProcess, reader: StoreReader) -> int:
    """Make trades the stream delivers; return the venue's last id once they are stored."""
    await sim.set_market(steps=STEPS)
    last = (await sim.last_ids((S,)))[S]
    assert last > 0, "premise: the steps made trades"
    await _wait_stored(d, reader, last)
    return last


async def _unseen_trades(sim: SimProcess, stored_last: int) -> int:
    """Trades the stream does not deliver; the venue's last id after them.

    The stall stays armed (the caller clears it): the simulator decides a
    message's fate when it sends it, so disarming right after the steps could
    let some of them through.
    """
    await sim.arm(kind="ws_stall")
    await sim.set_market(steps=STEPS)
    venue_last = (await sim.last_ids((S,)))[S]
    assert venue_last > stored_last + 1, "premise: trades were made while the stream was silent"
    return venue_last


async def _assert_store_equals_venue(
    sim: SimProcess, reader: StoreReader, first: int, last: int
) -> None:
    stored = await trio.to_thread.run_sync(reader.trades, S)
    ids = [t.trade_id for t in stored if t.trade_id >= first]
    assert missing_ids(ids, first, last) == [], f"trades {first}..{last} not all stored"
    assert ids == sorted(set(ids)) and ids[-1] == last
    published = {t.trade_id: t for t in await sim.published(S, first, last)}
    for t in stored:
        if t.trade_id >= first:
            p = published[t.trade_id]
            assert (t.price, t.quantity, t.buyer_is_maker, t.trade_time_ms) == (
                p.price,
                p.quantity,
                p.buyer_is_maker,
                p.trade_time_ms,
            )


async def _stop(d: DaemonProcess) -> None:
    assert await d.stop(timeout_s=WAIT_S + 15) == 0, d.diag()


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    """The daemon's ``[store]`` and its witness: SQLite unless parametrised (``postgres``)."""
    backend = str(getattr(request, "param", "sqlite"))
    with store_under_test(backend, state_dir_of(tmp_path), DB_NAME) as under_test:
        yield under_test


def _sim(tmp_path: Path) -> AbstractAsyncContextManager[SimProcess]:
    return sim_process(tmp_path, "--seed", "13", "--events-per-s", "0", "--paused", "--symbols", S)


async def test_capture_without_an_api_key_stores_every_trade_across_a_disconnect(
    tmp_path: Path, sockdir: Path
) -> None:
    with trio.fail_after(BUDGET_S):
        async with open_harness(tmp_path, sockdir) as h, _sim(tmp_path) as sim:
            d, admin = await _start(h, sim, api_key=False, tail_check_interval_s=0)
            reader = StoreReader(h.state_dir / DB_NAME)
            first_live = await _live_trades(sim, d, reader)
            venue_last = await _unseen_trades(sim, first_live)
            await sim.drop_streams("close")  # the reconnect's catch-up must fetch them
            await _wait_stored(d, reader, venue_last)
            await sim.clear_faults()
            await _assert_store_equals_venue(sim, reader, first_live, venue_last)
            gaps = await trio.to_thread.run_sync(reader.gaps, S)
            # Only REST could deliver them: the stream was silent throughout.
            assert [(g.from_id, g.to_id, g.state) for g in gaps] == [
                (first_live + 1, venue_last, "backfilled")
            ], gaps
            md = await admin.capture()
            assert md["symbols"][S]["trades"]["backfill"] == venue_last - first_live
            await _stop(d)


@pytest.mark.parametrize("store", BACKENDS, indirect=True)
async def test_a_failing_catch_up_before_a_quiet_market_is_recorded_and_filled(
    tmp_path: Path, sockdir: Path, store: StoreUnderTest
) -> None:
    """The gap is in the store at once with its bounds; health says so until it is filled.

    On both store backends: SQLite's file and a PostgreSQL schema, each read
    from outside (:mod:`tests.helpers.pg_witness`).
    """
    with trio.fail_after(BUDGET_S):
        async with open_harness(tmp_path, sockdir) as h, _sim(tmp_path) as sim:
            d, admin = await _start(h, sim, tail_check_interval_s=0, store=store.toml)
            reader = StoreReader(store.witness)
            stored_last = await _live_trades(sim, d, reader)

            async def healthy() -> bool:
                body = await admin.health()
                return body["level"] == "healthy" and not body["reasons"]

            await await_until(healthy, what="health to be healthy", poll_s=0.05, diag=d.diag)
            await sim.arm(kind="rest_error", path=HISTORICAL, status=503)
            venue_last = await _unseen_trades(sim, stored_last)
            await sim.drop_streams("close")  # the reconnect's catch-up gets 503s
            # From here on the market is quiet: no trade will reveal the hole.

            async def open_gap() -> Any:
                rows = await trio.to_thread.run_sync(reader.gaps, S)
                return [g for g in rows if g.state == "open"] or None

            (gap,) = await await_until(
                open_gap, what="an open gap in the store", poll_s=0.05, diag=d.diag
            )
            assert (gap.from_id, gap.to_id) == (stored_last + 1, venue_last)
            assert await _stored_last(reader) == stored_last  # nothing fetched meanwhile
            span = f"{gap.from_id}..{gap.to_id}"
            count = venue_last - stored_last

            async def degraded() -> Any:
                body = await admin.health()
                found = [r for r in body["reasons"] if "open gap" in r and span in r]
                return body if body["level"] == "degraded" and found else None

            await await_until(degraded, what="health degraded by the gap", poll_s=0.05)
            md = await admin.capture()
            assert md["open_gaps"] == {"count": 1, "trades": count, "symbols": [S]}
            metrics = await admin.metrics()
            assert _metric(metrics, "tradingd_marketdata_open_gaps") == 1
            assert _metric(metrics, "tradingd_marketdata_gap_trades") == count
            faults = await sim.faults()
            assert any(f["kind"] == "rest_error" and int(f["hits"]) > 0 for f in faults)

            await sim.clear_faults()
            await _wait_stored(d, reader, venue_last)

            async def filled() -> bool:
                rows = await trio.to_thread.run_sync(reader.gaps, S)
                return [(g.from_id, g.to_id, g.state) for g in rows if g.state != "open"] == [
                    (stored_last + 1, venue_last, "backfilled")
                ] and all(g.state != "open" for g in rows)

            await await_until(filled, what="the gap backfilled", poll_s=0.05, diag=d.diag)
            await _assert_store_equals_venue(sim, reader, stored_last, venue_last)
            await await_until(healthy, what="health healthy again", poll_s=0.05, diag=d.diag)
            metrics = await admin.metrics()
            assert _metric(metrics, "tradingd_marketdata_open_gaps") == 0
            await _stop(d)
