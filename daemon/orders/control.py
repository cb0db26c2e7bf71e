"""The operator's handle on the order pipeline: control-socket commands and shared answers.

Two surfaces reach the same :class:`~daemon.orders.service.OrdersService`:
the admin HTTP API (:mod:`daemon.admin.api`) and the control socket behind
``tradingd halt|resume|reduce-only|trading|orders`` (:func:`handle_orders_command`).
Both must agree on what a request means and on how a failure reads, so the
pieces they share live here, once:

* :func:`error_answer` turns a gateway error into its status and JSON body —
  the table in :mod:`daemon.orders.gateway` (400 with every problem, 422 with
  coded reasons, 409, 503 with a retry hint, 404) plus the store failing a read
  (503). Anything else is a bug and is left to the caller's generic handling.
* :func:`parse_states`, :func:`parse_limit`, :func:`parse_switch` check the
  operator's filters and switch requests and say exactly which value is wrong.
* :func:`set_trading` / :func:`trading_view` apply and show halt / reduce-only /
  resume. A switch works even while the pipeline restarts (the service keeps
  it in memory and persists it when the store is up).

Control-socket messages (one JSON object; the answer always has ``"ok"``)::

    {"cmd": "trading", "action": "show"}
    {"cmd": "trading", "action": "halt" | "resume" | "reduce-only",
     "account": "main" (optional: all accounts), "reason": "text" (optional)}
    {"cmd": "orders", "action": "list",
     "account": "main", "states": ["open"] | "FILLED,CANCELED", "limit": 50}   (all optional)
    {"cmd": "orders", "action": "show", "client_order_id": "td1-..."}
    {"cmd": "orders", "action": "cancel", "client_order_id": "td1-..."}
      (a PENDING intent is canceled at once, before sending: ``"canceled_before_sending"``)
    {"cmd": "positions", "account": "main"}   (optional: every account)
      → {"ok": true, "positions": [{"account", "symbol", "quantity"}, ...]}
    {"cmd": "reconcile", "account": "main"}   (optional: every account)
      → one reconciliation pass now: {"ok": true, "reconciled": bool, "error",
        "checked", "changed": [{"client_order_id", "account", "from", "to",
        "executed_before", "executed_after"}], "unknown_venue_orders": [...]}

A failure answers ``{"ok": false, "error": "...", "status": <HTTP-equivalent
status>, ...}`` with the same extra fields the HTTP API gives (``problems``,
``reasons``, ``retry_after_s``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs

from daemon.control import shown as _shown
from daemon.errors import RiskRejectedError, StoreError
from daemon.orders.gateway import (
    EntrySaturatedError,
    EntryUnavailableError,
    IntentConflictError,
    UnknownOrderError,
)
from daemon.orders.ids import validate_client_order_id
from daemon.orders.intent import IntentValidationError
from daemon.orders.records import IntentRecord, plain
from daemon.orders.state import TERMINAL_STATES, OrderState
from daemon.risk.state import TradingState

if TYPE_CHECKING:
    from daemon.orders.service import OrdersService

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "MAX_LIST_LIMIT",
    "MAX_REASON_CHARS",
    "NO_ACCOUNTS",
    "OPEN_FILTER",
    "ORDERS_COMMANDS",
    "TRADING_ACTIONS",
    "ErrorAnswer",
    "OperatorInputError",
    "error_answer",
    "handle_orders_command",
    "orders_view",
    "parse_client_order_id",
    "parse_limit",
    "parse_states",
    "parse_switch",
    "positions_view",
    "reconcile_now",
    "set_trading",
    "trading_view",
]

#: Answer when the daemon runs without ``[accounts]`` (the pipeline is not built at all).
NO_ACCOUNTS: Final = "no [accounts] configured: the order pipeline is not enabled"

#: Orders listed when the caller does not say how many.
DEFAULT_LIST_LIMIT: Final = 100
#: Most orders one listing returns (one store read; page with filters for more).
MAX_LIST_LIMIT: Final = 1000
#: Longest operator reason kept with a trading switch (it is logged and persisted).
MAX_REASON_CHARS: Final = 500

#: The state filter meaning "every non-terminal state".
OPEN_FILTER: Final = "open"
_OPEN_STATES: Final = frozenset(OrderState) - TERMINAL_STATES

#: Operator verb → the switch it sets.
TRADING_ACTIONS: Final[Mapping[str, TradingState]] = {
    "halt": TradingState.HALTED,
    "reduce-only": TradingState.REDUCING,
    "resume": TradingState.ACTIVE,
}

_SWITCH_FIELDS: Final = frozenset({"account", "reason"})


class OperatorInputError(ValueError):
    """An operator's filter or switch request is malformed (HTTP 400, ``ok: false``)."""


@attrs.frozen
class ErrorAnswer:
    """How one failure reads on both surfaces.

    Attributes:
        status: The HTTP status (also reported as ``status`` on the control socket).
        body: The JSON body; always has ``error``.
        retry_after_s: For 503s, when a retry makes sense (``Retry-After``).
    """

    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``Retry-After`` in whole seconds, rounded up; at least 1 (0 invites a retry storm)."""
        if self.retry_after_s is None:
            return ()
        return (("Retry-After", str(max(1, math.ceil(self.retry_after_s)))),)


def _reason_json(reason: Any) -> dict[str, Any]:
    to_json = getattr(reason, "to_json", None)
    if callable(to_json):
        out: dict[str, Any] = to_json()
        return out
    return {"code": reason.code, "message": reason.message}


def error_answer(exc: BaseException) -> ErrorAnswer | None:
    """The answer for a gateway, store or operator-input error; ``None`` for anything else.

    ``None`` means the exception is not an expected outcome (a bug): the
    caller lets it reach its generic handler (a ``500`` without details).
    """
    if isinstance(exc, IntentValidationError):
        return ErrorAnswer(
            400,
            {
                "error": f"invalid order intent ({len(exc.problems)} problem(s))",
                "problems": [p.as_dict() for p in exc.problems],
            },
        )
    if isinstance(exc, OperatorInputError):
        return ErrorAnswer(400, {"error": str(exc)})
    if isinstance(exc, RiskRejectedError):
        return ErrorAnswer(
            422, {"error": str(exc), "reasons": [_reason_json(r) for r in exc.reasons]}
        )
    if isinstance(exc, IntentConflictError):
        return ErrorAnswer(
            409,
            {
                "error": str(exc),
                "client_order_id": exc.client_order_id,
                "fields": list(exc.fields),
            },
        )
    if isinstance(exc, UnknownOrderError):
        return ErrorAnswer(404, {"error": str(exc), "client_order_id": exc.client_order_id})
    if isinstance(exc, EntrySaturatedError | EntryUnavailableError):
        return ErrorAnswer(
            503, {"error": str(exc), "retry_after_s": exc.retry_after_s}, exc.retry_after_s
        )
    if isinstance(exc, StoreError):
        # A read the service does not wrap (listing, history, positions).
        return ErrorAnswer(
            503, {"error": f"the order store cannot be read: {exc}", "retry_after_s": 1.0}, 1.0
        )
    return None


# ---------------------------------------------------------------------------- parsing


def parse_states(values: Iterable[str]) -> frozenset[OrderState] | None:
    """The state filter from repeated and/or comma-separated names; ``None``: no filter.

    Names are case-insensitive; ``open`` stands for every non-terminal state.

    Raises:
        OperatorInputError: an unknown name (every one is listed).
    """
    wanted: set[OrderState] = set()
    unknown: list[str] = []
    seen_any = False
    for value in values:
        for raw in value.split(","):
            name = raw.strip()
            if not name:
                continue
            seen_any = True
            if name.lower() == OPEN_FILTER:
                wanted |= _OPEN_STATES
                continue
            try:
                wanted.add(OrderState(name.upper()))
            except ValueError:
                unknown.append(name)
    if unknown:
        choices = ", ".join([OPEN_FILTER, *(s.value for s in OrderState)])
        raise OperatorInputError(
            f"unknown order state(s) {', '.join(repr(u) for u in unknown)} (one of: {choices})"
        )
    return frozenset(wanted) if seen_any else None


def parse_limit(value: object, *, default: int = DEFAULT_LIST_LIMIT) -> int:
    """A listing limit in ``1..MAX_LIST_LIMIT`` from an int or a decimal string.

    Raises:
        OperatorInputError: not an integer, or out of range.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise OperatorInputError(f"limit must be an integer, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only (``int`` also takes other scripts' digits), and few of
        # them: thousands of digits would hit the int-string conversion limit.
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            raise OperatorInputError(f"limit must be an integer, got {_shown(value)}")
        value = int(text)
    if not isinstance(value, int):
        raise OperatorInputError(f"limit must be an integer, got {_shown(value)}")
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise OperatorInputError(f"limit must be in 1..{MAX_LIST_LIMIT}, got {_shown(value)}")
    return value


def parse_client_order_id(value: object) -> str:
    """A client order id in the venue's format.

    Raises:
        OperatorInputError: missing or malformed (the message names the value).
    """
    try:
        return validate_client_order_id(value)
    except ValueError as exc:
        raise OperatorInputError(str(exc)) from None


def parse_switch(body: object) -> tuple[str | None, str]:
    """``(account, reason)`` of a halt / reduce-only / resume request (``None``: all accounts).

    ``body`` is the decoded JSON body (``None`` when there was none).

    Raises:
        OperatorInputError: not an object, an unknown field, or a field of the wrong type.
    """
    if body is None:
        return None, ""
    if not isinstance(body, Mapping):
        raise OperatorInputError(
            f'expected a JSON object like {{"account": ..., "reason": ...}}, '
            f"got {type(body).__name__}"
        )
    unknown = sorted(str(k) for k in body if k not in _SWITCH_FIELDS)
    problems = [f"unknown field {name!r}" for name in unknown]
    account = body.get("account")
    if account is not None and (not isinstance(account, str) or not account):
        problems.append(f"account must be a non-empty string, got {_shown(account)}")
    reason = body.get("reason")
    if reason is None:
        reason = ""
    elif not isinstance(reason, str):
        problems.append(f"reason must be a string, got {type(reason).__name__}")
    elif len(reason) > MAX_REASON_CHARS:
        problems.append(f"reason is longer than {MAX_REASON_CHARS} characters ({len(reason)})")
    if problems:
        raise OperatorInputError("; ".join(problems))
    return account, reason


# ---------------------------------------------------------------------------- views


def trading_view(service: OrdersService) -> dict[str, Any]:
    """The switches as set, and the state that applies to each configured account."""
    return {
        "states": service.states.snapshot(),
        "effective": {
            account: service.states.effective(account).value for account in sorted(service.accounts)
        },
    }


async def set_trading(
    service: OrdersService, action: str, account: str | None, reason: str
) -> dict[str, Any]:
    """Apply ``halt`` / ``reduce-only`` / ``resume`` and return the new :func:`trading_view`.

    ``persisted`` tells whether the store has the change; when it does not,
    ``warning`` says why (the switch still holds in memory until a restart).

    Raises:
        OperatorInputError: unknown action or unknown account.
    """
    state = TRADING_ACTIONS.get(action)
    if state is None:
        raise OperatorInputError(
            f"unknown trading action {action!r} (one of: {', '.join(TRADING_ACTIONS)}, show)"
        )
    try:
        result = await service.set_trading_state(state, account, reason=reason)
    except ValueError as exc:  # an unknown (or empty) account name
        raise OperatorInputError(str(exc)) from None
    return {**trading_view(service), "persisted": result["persisted"], "warning": result["error"]}


def positions_view(positions: Mapping[tuple[str, str], Decimal]) -> list[dict[str, Any]]:
    """``[{account, symbol, quantity}]`` sorted by account and symbol (quantities as strings)."""
    return [
        {"account": account, "symbol": symbol, "quantity": plain(quantity)}
        for (account, symbol), quantity in sorted(positions.items())
    ]


def orders_view(records: Iterable[IntentRecord]) -> list[dict[str, Any]]:
    """JSON rows of ``records`` in the order given."""
    return [record.to_json() for record in records]


# ---------------------------------------------------------------------------- control socket


#: The control-socket commands :func:`handle_orders_command` answers.
ORDERS_COMMANDS: Final = ("trading", "orders", "positions", "reconcile")


async def handle_orders_command(
    service: OrdersService | None, message: Mapping[str, Any]
) -> dict[str, Any]:
    """Answer one control-socket command of :data:`ORDERS_COMMANDS` (see the module docstring).

    Never raises for an expected failure: bad input, an unknown order, the
    pipeline or store down all become ``{"ok": false, "error": ..., "status": ...}``.
    """
    cmd = message.get("cmd")
    if cmd not in ORDERS_COMMANDS:
        return {"ok": False, "error": f"not an orders command: {cmd!r}"}
    if service is None:
        return {"ok": False, "error": NO_ACCOUNTS, "status": 503}
    try:
        if cmd == "trading":
            return await _trading(service, message)
        if cmd == "positions":
            return await _positions(service, message)
        if cmd == "reconcile":
            return await reconcile_now(service, message.get("account"))
        return await _orders(service, message)
    except Exception as exc:
        answer = error_answer(exc)
        if answer is None:
            raise
        return {"ok": False, "status": answer.status, **answer.body}


async def _positions(service: OrdersService, message: Mapping[str, Any]) -> dict[str, Any]:
    account = message.get("account")
    if account is not None and not isinstance(account, str):
        raise OperatorInputError(f"account must be a string, got {_shown(account)}")
    return {"ok": True, "positions": positions_view(await service.positions(account))}


async def reconcile_now(service: OrdersService, account: object = None) -> dict[str, Any]:
    """Run one reconciliation pass now; what it found and changed (of ``account``'s orders).

    The pass covers every account this daemon trades (queries are per order,
    each under its lock, so it may overlap the periodic pass); ``account``
    only narrows the report. ``changed``: the live orders whose state or
    executed quantity the pass moved (fills fetched, UNKNOWN resolved, ends
    learnt); ``unknown_venue_orders``: open orders the venues hold that the
    store does not know (reported, never touched).
    """
    if account is not None and not isinstance(account, str):
        raise OperatorInputError(f"account must be a string, got {_shown(account)}")
    if account is not None and account not in service.accounts:
        known = ", ".join(sorted(service.accounts)) or "none"
        raise OperatorInputError(f"unknown account {_shown(account)} (known: {known})")
    pipeline = service.pipeline
    if pipeline is None:
        return {"ok": False, "error": "the order pipeline is not running", "status": 503}
    ledger = pipeline.ledger
    before = {
        r.client_order_id: r for r in ledger.live() if account is None or r.account == account
    }
    reconciled = await pipeline.reconciler.full_pass()
    changed = []
    for coid, old in before.items():
        new = ledger.get(coid) or await pipeline.store.get(coid)
        if new is None or (new.state, new.executed_qty) == (old.state, old.executed_qty):
            continue
        changed.append(
            {
                "client_order_id": coid,
                "account": old.account,
                "from": old.state.value,
                "to": new.state.value,
                "executed_before": plain(old.executed_qty),
                "executed_after": plain(new.executed_qty),
            }
        )
    venues = {service.accounts[account]} if account is not None else None
    unknown = [
        entry
        for entry in pipeline.reconciler.unknown_venue_orders.values()
        if venues is None or entry["venue"] in venues
    ]
    return {
        "ok": True,
        "reconciled": reconciled,
        "error": pipeline.reconciler.last_pass_error,
        "checked": len(before),
        "changed": changed,
        "unknown_venue_orders": unknown,
    }


async def _trading(service: OrdersService, message: Mapping[str, Any]) -> dict[str, Any]:
    action = message.get("action", "show")
    if action == "show":
        return {"ok": True, **trading_view(service)}
    if not isinstance(action, str):
        raise OperatorInputError(f"action must be a string, got {_shown(action)}")
    account, reason = parse_switch(
        {k: message[k] for k in ("account", "reason") if message.get(k) is not None}
    )
    return {"ok": True, "action": action, **await set_trading(service, action, account, reason)}


async def _orders(service: OrdersService, message: Mapping[str, Any]) -> dict[str, Any]:
    action = message.get("action")
    if action == "list":
        account = message.get("account")
        if account is not None and not isinstance(account, str):
            raise OperatorInputError(f"account must be a string, got {_shown(account)}")
        raw_states = message.get("states")
        if raw_states is None:
            values: list[str] = []
        elif isinstance(raw_states, str):
            values = [raw_states]
        elif isinstance(raw_states, list) and all(isinstance(s, str) for s in raw_states):
            values = raw_states
        else:
            raise OperatorInputError(
                f"states must be a string or a list of strings, got {_shown(raw_states)}"
            )
        states = parse_states(values)
        limit = parse_limit(message.get("limit"))
        records = await service.list_orders(
            account=account, states=None if states is None else list(states), limit=limit
        )
        return {"ok": True, "orders": orders_view(records)}
    if action in ("show", "cancel"):
        coid = parse_client_order_id(message.get("client_order_id"))
        if action == "show":
            return {"ok": True, **await service.details(coid)}
        before = await service.get(coid)
        record = await service.cancel(coid)
        return {"ok": True, **cancel_answer(before, record)}
    raise OperatorInputError(f"unknown orders action {_shown(action)} (one of: list, show, cancel)")


def cancel_answer(before: IntentRecord, after: IntentRecord) -> dict[str, Any]:
    """What a cancel did, for the control socket and ``POST /orders/{id}/cancel`` alike.

    ``cancel_requested``: the cancel is recorded (to be sent once the order is
    open), or it ended the intent here; ``canceled_before_sending``: this call
    canceled a PENDING intent before anything was sent (PENDING → CANCELED,
    no venue order). An intent that was already finished gets both ``False``.
    """
    local = not before.is_terminal and after.state is OrderState.CANCELED
    local = local and after.venue_order_id is None
    return {
        "cancel_requested": not after.is_terminal or local,
        "canceled_before_sending": local,
        "client_order_id": after.client_order_id,
        "state": after.state.value,
        "order": after.to_json(),
    }
