"""The exchange simulator's control API (``/sim/...``), as every kind of test client reads it.

The simulator's own tests (:class:`~tests.helpers.sim_api.Api`), the in-process
harness (:class:`~tests.helpers.sim.SimHarness`) and ``tradingd sim`` as a
process (:class:`~tests.helpers.sim.SimProcess`) differ only in how one request
goes (:meth:`SimControl.control`): arming faults, the audit log, the synthetic
market and the published trades are read the same way, independently of the
client under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

#: Largest page ``GET /sim/trades`` serves.
SIM_TRADES_PAGE = 100_000


@attrs.frozen
class PublishedTrade:
    """One trade as the simulator published it (``GET /sim/trades``)."""

    trade_id: int
    price: Decimal
    quantity: Decimal
    buyer_is_maker: bool
    trade_time_ms: int


class SimControl:
    """A client of the simulator's control API; subclasses say how one request goes."""

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """One control-API request; its JSON answer (a status >= 300 fails the test)."""
        raise NotImplementedError

    async def arm(self, **spec: Any) -> dict[str, Any]:
        """Arm one fault (``POST /sim/faults``); returns it as the sim shows it, with its id."""
        answer = await self.control("POST", "/sim/faults", spec)
        armed: dict[str, Any] = answer["armed"][0]
        return armed

    async def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = (await self.control("GET", "/sim/faults"))["faults"]
        return faults

    async def clear_faults(self) -> None:
        await self.control("DELETE", "/sim/faults")

    async def audit(self, client_order_id: str | None = None) -> list[dict[str, Any]]:
        """Orders the venue accepted (all, or those with ``client_order_id``)."""
        path = "/sim/audit"
        if client_order_id is not None:
            path += f"?clientOrderId={client_order_id}"
        orders: list[dict[str, Any]] = (await self.control("GET", path))["orders"]
        return orders

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.control("GET", "/sim/status")
        return status

    async def set_market(self, *, paused: bool | None = None, steps: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": steps}
        if paused is not None:
            body["paused"] = paused
        state: dict[str, Any] = await self.control("POST", "/sim/market", body)
        return state

    async def drop_streams(self, mode: str = "close") -> None:
        """Drop every stream connection now (``POST /sim/streams/drop``)."""
        await self.control("POST", "/sim/streams/drop", {"mode": mode})

    async def last_ids(self, symbols: Sequence[str]) -> dict[str, int]:
        """Each symbol's last published trade id (0: none yet)."""
        market = await self.control("GET", "/sim/market")
        return {s: int(market["symbols"][s]["lastTradeId"] or 0) for s in symbols}

    async def published(self, symbol: str, from_id: int, to_id: int) -> list[PublishedTrade]:
        """The published trades ``from_id..to_id`` (what the sim's audit log still holds)."""
        out: list[PublishedTrade] = []
        next_id = from_id
        while next_id <= to_id:
            limit = min(SIM_TRADES_PAGE, to_id - next_id + 1)
            answer = await self.control(
                "GET", f"/sim/trades?symbol={symbol}&fromId={next_id}&limit={limit}"
            )
            page = [t for t in answer["trades"] if next_id <= int(t["id"]) <= to_id]
            if not page:
                break
            out.extend(
                PublishedTrade(
                    trade_id=int(t["id"]),
                    price=Decimal(t["price"]),
                    quantity=Decimal(t["qty"]),
                    buyer_is_maker=bool(t["isBuyerMaker"]),
                    trade_time_ms=int(t["time"]),
                )
                for t in page
            )
            next_id = out[-1].trade_id + 1
        return out
