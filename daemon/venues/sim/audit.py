"""The audit log: every order the simulator accepted, as it was sent.

Tests of the daemon's "exactly one order per intent" promise need the venue's
side of the story, independent of what the client believes: which orders
reached the matching engine, under which client order id, with which
parameters — including the ones whose answer the client never saw (faults
after processing). ``GET /sim/audit`` serves this log.

Rejected requests are not orders and are not recorded. The log is bounded
(``audit_retention``); ``seq`` numbers keep growing so a reader can page.
Each record says how the order came (``transport``: ``"rest"`` for
``POST /api/v3/order``, ``"ws-api"`` for the WebSocket API's ``order.place``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["AuditLog", "AuditRecord"]

log = logging.getLogger("tradingd.sim.audit")


@attrs.frozen
class AuditRecord:
    """One accepted order."""

    seq: int
    time_ms: int
    api_key: str
    symbol: str
    order_id: int
    client_order_id: str
    status: str
    params: Mapping[str, str]
    transport: str = "rest"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time_ms,
            "apiKey": self.api_key,
            "symbol": self.symbol,
            "orderId": self.order_id,
            "clientOrderId": self.client_order_id,
            "status": self.status,
            "params": dict(self.params),
            "transport": self.transport,
        }


class AuditLog:
    """Accepted orders, oldest first, at most ``retention`` of them."""

    def __init__(self, retention: int) -> None:
        self._records: deque[AuditRecord] = deque(maxlen=retention)
        self._next_seq = 1

    def __len__(self) -> int:
        return len(self._records)

    def record(
        self,
        *,
        time_ms: int,
        api_key: str,
        symbol: str,
        order_id: int,
        client_order_id: str,
        status: str,
        params: Mapping[str, str],
        transport: str = "rest",
    ) -> AuditRecord:
        """Append one accepted order (``params`` without the signature), sent over ``transport``."""
        entry = AuditRecord(
            seq=self._next_seq,
            time_ms=time_ms,
            api_key=api_key,
            symbol=symbol,
            order_id=order_id,
            client_order_id=client_order_id,
            status=status,
            params={k: v for k, v in params.items() if k != "signature"},
            transport=transport,
        )
        self._next_seq += 1
        self._records.append(entry)
        log.debug(
            "accepted %s %s orderId=%d clientOrderId=%s status=%s",
            api_key[:8],
            symbol,
            order_id,
            client_order_id,
            status,
        )
        return entry

    def query(
        self,
        *,
        api_key: str | None = None,
        symbol: str | None = None,
        client_order_id: str | None = None,
        from_seq: int = 0,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Records matching every given filter, oldest first."""
        out = []
        for entry in self._records:
            if entry.seq < from_seq:
                continue
            if api_key is not None and entry.api_key != api_key:
                continue
            if symbol is not None and entry.symbol != symbol:
                continue
            if client_order_id is not None and entry.client_order_id != client_order_id:
                continue
            out.append(entry)
            if limit is not None and len(out) >= limit:
                break
        return out
