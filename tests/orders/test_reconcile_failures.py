"""A failed query of one order fails a reconciliation round, never the order pipeline.

The queries of a pass (and of a tracker round) run in a nursery, one task per
order: an error raised by one of them leaves the nursery inside an exception
group. Caught as a plain ``TradingdError``, it escaped, ended the tracker or
the periodic pass, and the supervisor restarted the whole order pipeline.
These stand-ins give the :class:`~daemon.orders.reconcile.Reconciler` one
UNKNOWN order whose query fails.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from daemon.config import OrdersConfig
from daemon.errors import StoreFullError, VenueUnavailableError
from daemon.orders.reconcile import Reconciler
from daemon.orders.state import OrderState

UNKNOWN = SimpleNamespace(client_order_id="td1-x", account="main", state=OrderState.UNKNOWN)


class _Ledger:
    records = {UNKNOWN.client_order_id: UNKNOWN}

    def live(self, states: Any = None) -> list[Any]:
        return [UNKNOWN]

    def get(self, client_order_id: str) -> Any:
        return self.records.get(client_order_id)

    def counts(self) -> dict[str, int]:
        return {"UNKNOWN": 1}


class _Holds:
    def release_due(self, pending: Any) -> list[Any]:
        return []

    def is_deferred(self, record: Any) -> bool:
        return False

    def next_release_in(self) -> None:
        return None


class _Executor:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.holds = _Holds()
        self.queries = 0

    async def settle_stuck(self) -> None:
        return None

    async def resolve(self, client_order_id: str) -> float | None:
        self.queries += 1
        await trio.lowlevel.checkpoint()
        raise self.error


class _Venues:
    async def wait_client(self, venue: str) -> None:
        return None

    def client(self, venue: str) -> None:
        return None


def reconciler(error: Exception) -> tuple[Reconciler, _Executor]:
    executor = _Executor(error)
    made = Reconciler(
        _Ledger(),  # type: ignore[arg-type]
        executor,  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        _Venues(),  # type: ignore[arg-type]
        accounts={"main": "sim"},
        settings=OrdersConfig(),
        sending_enabled=trio.Event(),
    )
    return made, executor


ERRORS = [
    VenueUnavailableError("sim GET /api/v3/order: connection refused", venue="sim"),
    StoreFullError("store orders.db: disk full while moving an order"),
]


@pytest.mark.parametrize("error", ERRORS, ids=["venue", "store"])
async def test_a_failed_query_fails_the_tracker_round_not_the_pipeline(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    made, executor = reconciler(error)
    with caplog.at_level(logging.WARNING, "tradingd.orders"):
        await made.tick()
    assert executor.queries == 1
    assert "tracker round failed" in caplog.text and str(error) in caplog.text


@pytest.mark.parametrize("error", ERRORS, ids=["venue", "store"])
async def test_a_failed_query_fails_the_pass_not_the_pipeline(error: Exception) -> None:
    made, executor = reconciler(error)
    assert await made.full_pass() is False
    assert executor.queries == 1
    assert made.last_pass_error == f"{type(error).__name__}: {error}"
    assert not made.reconciled


async def test_other_errors_are_not_swallowed() -> None:
    made, _ = reconciler(RuntimeError("a bug"))
    with pytest.RaisesGroup(RuntimeError, flatten_subgroups=True):
        await made.tick()
