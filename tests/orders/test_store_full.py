"""The order pipeline while its store cannot write (disk full): refuse, keep, recover.

Real pipeline, real SQLite store, real simulator (127.0.0.1, port 0). The
store's failures are injected into the pipeline's order store as the typed
error the store's lane raises on a full disk (:class:`StoreFullError`,
``SQLITE_FULL``), one method at a time, so that each test decides exactly
which write fails:

* a new intent the store cannot record gets a 503 that names the cause and
  carries a ``Retry-After``, nothing is recorded, and the same ``message_id``
  is accepted once the store writes again;
* an intent whose SENDING mark cannot be written is not sent; its place item
  tries again, the account's later intents wait behind it, and once the store
  writes each intent reaches the venue exactly once, in submission order;
* an intent whose venue answer cannot be written stays SENDING, is handed to
  the tracker as "stuck", and once the store writes it goes UNKNOWN and a
  query adopts the venue's order: one venue order, ACCEPTED;
* a fill the store cannot take fails alone — not the reconciliation pass,
  the tracker or the pipeline (no restart) — and is read from the venue and
  stored once when the store writes again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.errors import StoreFullError
from daemon.orders.entry_commit import STORE_DOWN_RETRY_AFTER_S
from daemon.orders.gateway import EntryUnavailableError
from daemon.orders.service import OrdersService
from daemon.orders.state import OrderState as S
from daemon.orders.state import Transition
from daemon.store.orders import OrderStore
from tests.helpers.orders import Running, limit_request, running_pipeline, wait_state
from tests.helpers.sim import SYMBOL, SimHarness, running_sim, sim_config

BUDGET_S = 30.0


def _full(
    path: str = "/state/orders.db", action: str = "recording order intents"
) -> StoreFullError:
    """What the store's lane raises for SQLITE_FULL (see daemon.store.errors.translate_error)."""
    return StoreFullError(
        f"store {path}: disk full while {action} [SQLITE_FULL: database or disk is full]",
        path=path,
        sqlite_error="SQLITE_FULL",
    )


def _order_store(service: OrdersService) -> OrderStore:
    pipeline = service.pipeline
    assert pipeline is not None
    store = pipeline.ledger.store
    assert isinstance(store, OrderStore)
    return store


def _wrap(
    monkeypatch: pytest.MonkeyPatch,
    store: OrderStore,
    name: str,
    fails: Callable[[str, Sequence[Transition]], bool],
) -> list[str]:
    """Make ``store.name`` raise :func:`_full` when ``fails(coid, transitions)``; the
    client order ids of the failed calls are returned (appended as they fail)."""
    original: Callable[..., Awaitable[Any]] = getattr(store, name)
    failed: list[str] = []

    async def wrapper(client_order_id: str, ts: Any, *args: Any, **kwargs: Any) -> Any:
        steps = (ts,) if isinstance(ts, Transition) else tuple(ts)
        if fails(client_order_id, steps):
            failed.append(client_order_id)
            raise _full(action="applying an order change")
        return await original(client_order_id, ts, *args, **kwargs)

    monkeypatch.setattr(store, name, wrapper)
    return failed


async def _audit_order(sim: SimHarness) -> list[str]:
    """Client order ids of every order the venue accepted, in the venue's order."""
    return [str(order["clientOrderId"]) for order in await sim.audit()]


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - state of another task, polled
        await trio.sleep(0.01)


async def test_an_intent_the_store_cannot_record_is_refused_with_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(BUDGET_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service
            store = _order_store(service)
            original = store.record_intents
            full = True

            async def record_intents(*args: Any, **kwargs: Any) -> Any:
                if full:
                    raise _full()
                return await original(*args, **kwargs)

            monkeypatch.setattr(store, "record_intents", record_intents)
            with pytest.raises(EntryUnavailableError) as refused:
                await service.submit(limit_request("full-1"))
            message = str(refused.value)
            assert message.startswith("disk full: "), message
            assert "orders.db" in message and "nothing was recorded" in message, message
            assert refused.value.retry_after_s == STORE_DOWN_RETRY_AFTER_S
            assert sum((await store.counts_by_state()).values()) == 0
            assert service.status()["entry"]["commit_failures"] == 1
            # Space again: the same message id is a new intent (nothing was half-written).
            full = False
            accepted = await service.submit(limit_request("full-1"))
            assert accepted.created
            await wait_state(service, accepted.client_order_id, S.ACCEPTED)
            assert await _audit_order(sim) == [accepted.client_order_id]


async def _pending_behind_a_down_venue(run: Running, *messages: str) -> list[str]:
    """Submit while the venue is down (no fast path: every intent stays PENDING)."""
    run.venues.down = True
    coids = [(await run.service.submit(limit_request(m))).client_order_id for m in messages]
    for coid in coids:
        assert (await run.service.get(coid)).state is S.PENDING
    return coids


async def test_no_send_without_a_durable_sending_mark_and_order_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(BUDGET_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service
            first, second = await _pending_behind_a_down_venue(run, "mark-1", "mark-2")
            full = True
            failed = _wrap(
                monkeypatch,
                _order_store(service),
                "apply_transition",
                lambda coid, ts: full and coid == first and ts[-1].target is S.SENDING,
            )
            pipeline = service.pipeline
            assert pipeline is not None
            run.venues.down = False
            # The mark fails again and again: the place item retries, nothing goes out,
            # and the account's next intent waits behind it.
            await _until(lambda: len(failed) >= 2)
            assert await _audit_order(sim) == []
            assert pipeline.executor.store_waits >= 2
            assert (await service.get(first)).state is S.PENDING
            assert (await service.get(second)).state is S.PENDING
            full = False
            await wait_state(service, first, S.ACCEPTED)
            await wait_state(service, second, S.ACCEPTED)
            # Exactly one venue order each, in submission order.
            assert await _audit_order(sim) == [first, second]
            history = [h["to"] for h in (await service.details(first))["history"]]
            assert history == ["PENDING", "SENDING", "ACCEPTED"]


async def test_an_answer_the_store_cannot_record_is_resolved_by_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(BUDGET_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service
            (coid,) = await _pending_behind_a_down_venue(run, "answer-1")
            store = _order_store(service)
            full = True

            def after_send(_coid: str, ts: Sequence[Transition]) -> bool:
                # The disk fills between the SENDING mark and the venue's answer.
                return full and ts[-1].target is not S.SENDING

            changes = _wrap(monkeypatch, store, "apply_changes", after_send)
            _wrap(monkeypatch, store, "apply_transition", after_send)
            pipeline = service.pipeline
            assert pipeline is not None
            run.venues.down = False
            await _until(lambda: coid in changes)
            await _until(lambda: coid in pipeline.executor.stuck)
            # On the venue, SENDING in the store (the tracker cannot move it yet).
            assert await _audit_order(sim) == [coid]
            await trio.sleep(0.3)  # a few tracker rounds fail while the store is full
            assert (await store.get(coid)) is not None
            assert (await service.get(coid)).state is S.SENDING
            full = False
            accepted = await wait_state(service, coid, S.ACCEPTED)
            assert accepted.venue_order_id is not None
            assert await _audit_order(sim) == [coid]
            history = [h["to"] for h in (await service.details(coid))["history"]]
            assert history == ["PENDING", "SENDING", "UNKNOWN", "ACCEPTED"], history


async def test_a_fill_the_store_cannot_take_is_read_again_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(BUDGET_S):
        async with (
            running_sim(sim_config()) as sim,
            running_pipeline(sim, tmp_path / "store.db") as run,
        ):
            service = run.service
            coid = (await service.submit(limit_request("fill-1"))).client_order_id
            await wait_state(service, coid, S.ACCEPTED)
            full = True
            changes = _wrap(
                monkeypatch, _order_store(service), "apply_changes", lambda _c, _ts: full
            )
            await sim.control("POST", "/sim/market/clear", {"symbol": SYMBOL})
            assert await sim.market_order("SELL", "0.010")
            # The tracker's polls and the periodic pass see the fill and cannot store it;
            # each one fails alone (not the pass, the tracker, or the pipeline).
            await _until(lambda: len(changes) >= 3)
            assert (await service.get(coid)).state is S.ACCEPTED
            full = False
            filled = await wait_state(service, coid, S.FILLED)
            assert filled.executed_qty == Decimal("0.010")
            assert len((await service.details(coid))["fills"]) == 1
            assert service.incarnations == 1
