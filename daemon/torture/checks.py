"""The invariants checked after every scenario, from the witnesses only.

Each check returns :class:`~daemon.torture.record.Violation` values (empty:
it held), named as the report names them:

``exactly-once``  one venue order per intent that reached the venue, none for
                  one that did not (a venue reject, a cancel before sending)
``no-stray``      every order the venue accepted belongs to a stored intent
``order-matches`` the venue order's symbol/side/type/price/quantity are the intent's
``no-loss``       every intent a client saw accepted is stored, under the same id
``same-id``       every answer for one message_id named the same client_order_id
``settled``       no intent left PENDING/SENDING/UNKNOWN; every requested cancel done
``fills``         the stored fills are the venue's executions, each on its order;
                  executed quantities add up
``positions``     the stored position is the signed sum of the venue's executions
``trades``        the stored trades are the published ones (same price, quantity,
                  time); every missing id in the captured range is a recorded gap
``integrity``     ``PRAGMA integrity_check`` says ``ok``
``ready``         the daemon ended READY and healthy, and stopped cleanly
``no-crash``      the daemon never exited unless the runner stopped it
``watchdog``      no watchdog ping arrived while the process was frozen
``disk-full``     a refusal while the disk was full was a clear 503; health came back
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import attrs

from daemon.torture.record import Event, Violation
from daemon.torture.setup import ACCOUNT, SYMBOL
from daemon.torture.witness import StoreView, VenueView
from daemon.torture.workload import ClientLog

__all__ = ["Ending", "check_all", "unknown_outcomes"]

NOT_SETTLED = frozenset({"PENDING", "SENDING", "UNKNOWN"})
TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
#: Most examples quoted in one violation.
SHOW = 5


@attrs.define
class Ending:
    """What the runner saw of the daemon at the end of a scenario."""

    #: /health status of the last incarnation before the stop (0: no answer).
    health: int = 0
    ready: bool = False
    #: message_id -> (first id, id named by the final re-submission) where they differ.
    echo_mismatches: dict[str, tuple[str, str]] = attrs.Factory(dict)
    echo_failures: dict[str, int] = attrs.Factory(dict)
    #: Exit status of the final SIGTERM (None: did not exit in time).
    term_code: int | None = None
    #: The venue's last trade id when the daemon was asked to catch up.
    capture_target: int | None = None
    #: Intents not settled when the settle wait ended, by state.
    unsettled: dict[str, int] = attrs.Factory(dict)


def _show(items: list[Any]) -> str:
    more = f" (+{len(items) - SHOW} more)" if len(items) > SHOW else ""
    return ", ".join(str(i) for i in items[:SHOW]) + more


def check_orders(log: ClientLog, venue: VenueView, store: StoreView) -> list[Violation]:
    out: list[Violation] = []
    by_coid: dict[str, list[Any]] = {}
    for order in venue.orders:
        by_coid.setdefault(order.client_order_id, []).append(order)
    doubled = [(c, len(o)) for c, o in by_coid.items() if len(o) > 1]
    if doubled:
        out.append(Violation("exactly-once", f"venue orders per intent > 1: {_show(doubled)}"))
    missing, unexpected, wrong_id, mismatch = [], [], [], []
    for coid, intent in store.intents.items():
        orders = by_coid.get(coid, [])
        if intent.venue_order_id is None:
            if orders:
                unexpected.append((coid, intent.state))
            continue
        if not orders:
            missing.append((coid, intent.state))
            continue
        if orders[0].order_id != intent.venue_order_id:
            wrong_id.append((coid, orders[0].order_id, intent.venue_order_id))
        o = orders[0]
        if (o.symbol, o.side, o.type, o.quantity, o.price) != (
            intent.symbol,
            intent.side,
            intent.type,
            intent.quantity,
            intent.price,
        ):
            mismatch.append((coid, o, intent))
    if missing:
        out.append(Violation("exactly-once", f"no venue order for: {_show(missing)}"))
    if unexpected:
        out.append(
            Violation("exactly-once", f"a venue order for an unsent intent: {_show(unexpected)}")
        )
    if wrong_id:
        out.append(Violation("exactly-once", f"stored venue order id differs: {_show(wrong_id)}"))
    if mismatch:
        out.append(Violation("order-matches", _show(mismatch)))
    stray = sorted(set(by_coid) - set(store.intents))
    if stray:
        out.append(Violation("no-stray", f"venue orders of no intent: {_show(stray)}"))
    by_mid = {i.message_id: i for i in store.intents.values()}
    lost = [
        (mid, coid)
        for mid, coid in log.accepted.items()
        if mid not in by_mid or by_mid[mid].client_order_id != coid
    ]
    if lost:
        out.append(Violation("no-loss", f"accepted, not stored as answered: {_show(lost)}"))
    wrong_account = [c for c, i in store.intents.items() if i.account != ACCOUNT]
    if wrong_account:
        out.append(Violation("order-matches", f"intents of another account: {wrong_account}"))
    if log.id_changes:
        out.append(Violation("same-id", f"answers named another id: {_show(log.id_changes)}"))
    return out


def check_fills(venue: VenueView, store: StoreView) -> list[Violation]:
    out: list[Violation] = []
    # One execution is one side of a trade: a self-trade is a BUY and a SELL of ours.
    theirs = {(f.trade_id, f.is_buyer): f for f in venue.fills}
    ours = {(f.trade_id, f.is_buyer): (coid, f) for coid, f in store.fills}
    if len(ours) != len(store.fills):
        out.append(Violation("fills", "an execution stored twice"))
    not_stored = sorted(set(theirs) - set(ours))
    invented = sorted(set(ours) - set(theirs))
    if not_stored or invented:
        out.append(
            Violation(
                "fills",
                f"venue fills not stored: {_show(not_stored)}; stored fills the "
                f"venue does not report: {_show(invented)}",
            )
        )
    differ: list[tuple[object, ...]] = []
    for key, (coid, fill) in ours.items():
        if key in theirs and fill != theirs[key]:
            differ.append((key, fill, theirs[key]))
        intent = store.intents.get(coid)
        if intent is None or intent.venue_order_id != fill.order_id:
            differ.append((key, coid, "on another order"))
    if differ:
        out.append(Violation("fills", f"stored fills differ: {_show(differ)}"))
    per_intent: dict[str, Decimal] = {}
    for coid, fill in store.fills:
        per_intent[coid] = per_intent.get(coid, Decimal(0)) + fill.quantity
    wrong = [
        (coid, i.executed, per_intent.get(coid, Decimal(0)))
        for coid, i in store.intents.items()
        if i.executed != per_intent.get(coid, Decimal(0))
    ]
    if wrong:
        out.append(Violation("fills", f"executed_qty != sum of fills: {_show(wrong)}"))
    signed = sum((f.quantity if f.is_buyer else -f.quantity for f in venue.fills), Decimal(0))
    stored = store.positions.get((ACCOUNT, SYMBOL), Decimal(0))
    if stored != signed:
        out.append(Violation("positions", f"stored {stored}, venue executions say {signed}"))
    return out


def check_trades(venue: VenueView, store: StoreView, target: int | None) -> list[Violation]:
    out: list[Violation] = []
    if not store.trades:
        return [Violation("trades", "no trade was captured")]
    differ = [
        (tid, t, venue.trades.get(tid))
        for tid, t in sorted(store.trades.items())
        if venue.trades.get(tid) != t
    ]
    if differ:
        out.append(Violation("trades", f"stored trades differ from published: {_show(differ)}"))
    first = min(store.trades)
    last = max(store.trades)
    if target is not None and last < target:
        out.append(Violation("trades", f"capture stopped at {last}, the venue was at {target}"))
    covered = [(a, b) for a, b, _state in store.gaps]
    holes: list[tuple[int, int]] = []
    expected = first
    for tid in sorted(store.trades):
        if tid > expected:
            holes.append((expected, tid - 1))
        expected = tid + 1
    unrecorded = [h for h in holes if not any(a <= h[0] and h[1] <= b for a, b in covered)]
    if unrecorded:
        out.append(Violation("trades", f"missing trade ids, no gap recorded: {_show(unrecorded)}"))
    return out


def check_settled(store: StoreView) -> list[Violation]:
    out: list[Violation] = []
    left = [(c, i.state) for c, i in store.intents.items() if i.state in NOT_SETTLED]
    if left:
        out.append(Violation("settled", f"intents not settled: {_show(left)}"))
    cancels = [
        (c, i.state)
        for c, i in store.intents.items()
        if i.cancel_requested and i.state not in TERMINAL
    ]
    if cancels:
        out.append(Violation("settled", f"cancel requested, order still open: {_show(cancels)}"))
    return out


def check_events(events: list[Event]) -> list[Violation]:
    out: list[Violation] = []
    for e in events:
        if e.kind == "freeze" and e.detail.get("pings_while_frozen", 0):
            out.append(Violation("watchdog", f"pings while frozen: event {e.index} {e.detail}"))
        if (
            e.kind == "freeze"
            and e.detail.get("outcome") == "continued"
            and "pings_resumed_s" not in e.detail
        ):
            out.append(Violation("watchdog", f"no ping after SIGCONT: event {e.index}"))
        if e.kind == "disk-full":
            unclear = [r for r in e.detail.get("refusals", {}) if not r.startswith("503")]
            if unclear:
                out.append(Violation("disk-full", f"refusals that are not 503: {unclear}"))
            if "healthy_again_s" not in e.detail:
                out.append(Violation("disk-full", f"health did not return: event {e.index}"))
    return out


def check_ending(end: Ending) -> list[Violation]:
    out: list[Violation] = []
    if not end.ready or end.health != 200:
        out.append(Violation("ready", f"at the end: READY={end.ready}, /health {end.health}"))
    if end.term_code != 0:
        out.append(Violation("ready", f"SIGTERM at the end: exit status {end.term_code}"))
    if end.echo_mismatches:
        items = list(end.echo_mismatches.items())
        out.append(Violation("same-id", f"a re-submission named another id: {_show(items)}"))
    if end.echo_failures:
        failed = list(end.echo_failures.items())
        out.append(Violation("same-id", f"a re-submission was not answered 200: {_show(failed)}"))
    return out


def check_all(
    log: ClientLog, venue: VenueView, store: StoreView, end: Ending, events: list[Event]
) -> list[Violation]:
    """Every invariant, in the order of the module's table."""
    violations = [
        *check_orders(log, venue, store),
        *check_settled(store),
        *check_fills(venue, store),
        *check_trades(venue, store, end.capture_target),
        *check_events(events),
        *check_ending(end),
    ]
    if store.integrity != "ok":
        violations.append(Violation("integrity", store.integrity[:500]))
    return violations


def unknown_outcomes(store: StoreView) -> list[tuple[float, str]]:
    """(seconds in UNKNOWN, the state it left for) of every UNKNOWN outcome."""
    out: list[tuple[float, str]] = []
    for rows in store.history.values():
        for (_s, target, _r, at_ms), nxt in zip(rows, [*rows[1:], None], strict=True):
            if target == "UNKNOWN":
                if nxt is None:
                    out.append((0.0, "still UNKNOWN"))
                else:
                    out.append((round((nxt[3] - at_ms) / 1000, 3), nxt[1]))
    return out


def counts(log: ClientLog, venue: VenueView, store: StoreView) -> dict[str, int]:
    rows = [r for rows in store.history.values() for r in rows]
    states = Counter(i.state for i in store.intents.values())
    per_coid = Counter(o.client_order_id for o in venue.orders)
    by_mid = {i.message_id: i.client_order_id for i in store.intents.values()}
    return {
        "duplicate venue orders": sum(n - 1 for n in per_coid.values() if n > 1),
        "accepted intents lost": sum(
            1 for mid, coid in log.accepted.items() if by_mid.get(mid) != coid
        ),
        "intents": len(store.intents),
        "accepted by a client": len(log.accepted),
        "duplicate submissions": log.duplicates_sent,
        "client retries": log.retries,
        "cancels requested": len(log.cancels),
        "venue orders": len(venue.orders),
        "venue fills": len(venue.fills),
        "found SENDING at start": sum(1 for r in rows if r[2].startswith("found SENDING")),
        "resends (proven absent)": sum(1 for r in rows if r[0] == "UNKNOWN" and r[1] == "PENDING"),
        "trades stored": len(store.trades),
        "trades published": len(venue.trades),
        **{f"state {s}": n for s, n in sorted(states.items())},
    }
