"""The order entry contract: what ``POST /orders`` and strategies call.

Both entry points — the admin API and the in-process API strategies get —
program against :class:`OrderGateway`. The daemon holds one stable gateway
for its whole life; the order pipeline behind it may restart (its supervisor
restarts it with the store), and while it is not running every call raises
:class:`EntryUnavailableError` instead of blocking, so a strategy or an HTTP
client learns at once and can retry.

Errors and the HTTP answers they map to:

==============================  ====  ==========================================
:class:`IntentValidationError`  400   malformed request; every problem listed
:class:`RiskRejectedError`      422   pre-trade risk refused; coded reasons
:class:`IntentConflictError`    409   the message id is taken by a different order
:class:`EntrySaturatedError`    503   the pipeline is full; retry after ``retry_after_s``
:class:`EntryUnavailableError`  503   the pipeline or the store is down; retry later
:class:`UnknownOrderError`      404   no intent with that client order id
==============================  ====  ==========================================

A success is a :class:`SubmitResult`: ``created`` tells a new intent (202)
from the same ``message_id`` seen again (200, the same ``client_order_id``
and its current state — never a second intent). Either way the intent was
durably committed before the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from daemon.errors import PermanentError, TransientError
from daemon.orders.records import IntentRecord
from daemon.orders.state import OrderState

__all__ = [
    "EntrySaturatedError",
    "EntryUnavailableError",
    "IntentConflictError",
    "OrderGateway",
    "SubmitResult",
    "UnknownOrderError",
]


class EntrySaturatedError(TransientError):
    """The pipeline cannot take more submissions now (503 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EntryUnavailableError(TransientError):
    """The order pipeline is not running, or the store cannot commit (503)."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IntentConflictError(PermanentError):
    """The ``message_id`` already names a *different* order (409).

    Attributes:
        client_order_id: The existing intent's id.
        fields: The fields that differ.
    """

    def __init__(self, client_order_id: str, fields: Sequence[str]) -> None:
        self.client_order_id = client_order_id
        self.fields = tuple(fields)
        super().__init__(
            f"message_id already used for order {client_order_id} with different "
            f"{', '.join(self.fields)}: a message id names exactly one order"
        )


class UnknownOrderError(PermanentError):
    """No intent has this client order id (404)."""

    def __init__(self, client_order_id: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"no order with client_order_id {client_order_id!r}")


@attrs.frozen
class SubmitResult:
    """A durably recorded intent, as the caller learns of it.

    Attributes:
        record: The intent as stored (its state may already have moved on).
        created: ``True`` for a new intent (202), ``False`` when the same
            ``message_id`` was seen before (200).
    """

    record: IntentRecord
    created: bool

    @property
    def client_order_id(self) -> str:
        return self.record.client_order_id

    @property
    def state(self) -> OrderState:
        return self.record.state

    def to_json(self) -> dict[str, Any]:
        return {
            "client_order_id": self.record.client_order_id,
            "state": self.record.state.value,
            "created": self.created,
            "order": self.record.to_json(),
        }


class OrderGateway(Protocol):
    """Order entry, as strategies and the admin API see it."""

    async def submit(self, request: Mapping[str, Any]) -> SubmitResult:
        """Validate, risk-check and durably record one intent; see the module docstring."""
        ...

    async def cancel(self, client_order_id: str) -> IntentRecord:
        """Durably request the cancel of an open order; the executor sends it in turn.

        Idempotent. Cancelling a finished order returns it unchanged.
        """
        ...

    async def get(self, client_order_id: str) -> IntentRecord:
        """The intent as stored now (raises :class:`UnknownOrderError`)."""
        ...

    async def open_orders(self, account: str | None = None) -> list[IntentRecord]:
        """Non-terminal intents (all accounts, or one), in submission order."""
        ...
