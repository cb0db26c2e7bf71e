"""What the control-socket commands print: the status, the trading switches and orders.

Plain text for a terminal, from the JSON documents the daemon answers
(``--json`` prints those as they are instead).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def render_status(status: dict[str, Any]) -> str:
    """A human rendering of the status document."""
    health = status.get("health", {})
    lag = status.get("loop_lag", {})
    lines = [
        f"tradingd {status.get('version')} pid {status.get('pid')}  "
        f"{status.get('state')}  up {status.get('uptime_s', 0):.0f}s  "
        f"config {status.get('config')}",
        f"health: {health.get('level')}"
        + (f" ({'; '.join(health.get('reasons', []))})" if health.get("reasons") else ""),
        f"loop lag: p50 {lag.get('p50_ms', 0):.1f}ms  p99 {lag.get('p99_ms', 0):.1f}ms  "
        f"max {lag.get('max_ms', 0):.1f}ms",
        "supervision:",
    ]
    lines.extend(_render_tree(status.get("supervision", {}), "  "))
    queues = status.get("queues", [])
    if queues:
        lines.append("queues:")
        for q in queues:
            lines.append(f"  {q['name']:<20} {q['depth']}/{q['capacity']} ({q['overflow']})")
    last = status.get("last_reload")
    if last:
        lines.append(f"last reload: {'ok' if last['ok'] else 'REJECTED'} ({last['origin']})")
    return "\n".join(lines)


def _render_tree(tree: dict[str, Any], indent: str) -> list[str]:
    out = [f"{indent}{tree.get('name')} [{tree.get('strategy')}]"]
    for child in tree.get("children", []):
        hb = child.get("heartbeat_age_s")
        hb_text = f" heartbeat {hb:.1f}s ago" if isinstance(hb, int | float) else ""
        err = f" last error: {child['last_error']}" if child.get("last_error") else ""
        out.append(
            f"{indent}  {child.get('name'):<16} {child.get('state'):<9} "
            f"restarts {child.get('restarts', 0)}{hb_text}{err}"
        )
        if child.get("supervisor"):
            out.extend(_render_tree(child["supervisor"], indent + "    "))
    return out


def render_trading(view: dict[str, Any]) -> str:
    """The switches as set and what applies to each account, for a terminal."""
    states = view.get("states", {})

    def switch(row: dict[str, Any]) -> str:
        reason = row.get("reason")
        return f"{row.get('state')}" + (f" ({reason})" if reason else "")

    lines = [f"global switch: {switch(states.get('global', {}))}"]
    accounts = states.get("accounts", {})
    if accounts:
        lines.append("account switches:")
        lines.extend(f"  {name:<16} {switch(row)}" for name, row in accounts.items())
    effective = view.get("effective", {})
    if effective:
        lines.append("effective:")
        lines.extend(f"  {name:<16} {state}" for name, state in effective.items())
    return "\n".join(lines)


_ORDER_COLUMNS = (
    ("SEQ", "seq"),
    ("CLIENT_ORDER_ID", "client_order_id"),
    ("ACCOUNT", "account"),
    ("SYMBOL", "symbol"),
    ("SIDE", "side"),
    ("TYPE", "type"),
    ("QUANTITY", "quantity"),
    ("PRICE", "price"),
    ("FILLED", "executed_qty"),
    ("STATE", "state"),
)


def render_positions(positions: list[dict[str, Any]]) -> str:
    """Positions as an aligned table (account, symbol, signed quantity), flat ones included."""
    if not positions:
        return "no positions"
    rows = [["ACCOUNT", "SYMBOL", "QUANTITY"]]
    rows += [[str(p.get(k)) for k in ("account", "symbol", "quantity")] for p in positions]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2].rjust(widths[2])}"
        for row in rows
    )


def render_replay(answer: dict[str, Any], *, as_json: bool = False) -> str:
    """What a dead-letter replay did to each letter (or would, with ``--dry-run``)."""
    if as_json:
        raw = {k: v for k, v in answer.items() if k != "ok"}
        return json.dumps(raw, indent=2, sort_keys=True)
    lines = [
        f"{r.get('id'):>6}  {r.get('source')}  {r.get('outcome')}: {r.get('detail')}"
        + ("  (removed)" if r.get("removed") else "")
        for r in answer.get("replayed", [])
    ]
    lines += [f"{m:>6}  no such dead letter" for m in answer.get("missing", [])]
    if not lines:
        lines = ["no dead letters to replay"]
    if answer.get("dry_run"):
        lines.append("(dry run: nothing changed)")
    return "\n".join(lines)


def render_reconcile(report: dict[str, Any]) -> str:
    """What a reconciliation pass found and changed, for a terminal."""
    lines = [
        f"reconciliation {'completed' if report.get('reconciled') else 'FAILED'}: "
        f"{report.get('checked')} live order(s) checked"
        + (f" ({report.get('error')})" if report.get("error") else "")
    ]
    changed = report.get("changed") or []
    lines.append(f"changed: {len(changed)}" if changed else "changed: none")
    lines += [
        f"  {c.get('client_order_id')}  {c.get('account')}  {c.get('from')} -> {c.get('to')}"
        f"  filled {c.get('executed_before')} -> {c.get('executed_after')}"
        for c in changed
    ]
    unknown = report.get("unknown_venue_orders") or []
    lines.append(
        f"venue orders the store does not know: {len(unknown)} (reported, not touched)"
        if unknown
        else "venue orders the store does not know: none"
    )
    lines += [
        f"  {u.get('venue')} {u.get('symbol')} {u.get('side')} order {u.get('order_id')} "
        f"client id {u.get('client_order_id')}"
        for u in unknown
    ]
    return "\n".join(lines)


def render_orders(orders: list[dict[str, Any]]) -> str:
    """Orders as an aligned table (newest first, as listed)."""
    if not orders:
        return "no orders"
    rows = [[h for h, _ in _ORDER_COLUMNS]]
    rows += [
        ["-" if o.get(k) is None else str(o.get(k)) for _, k in _ORDER_COLUMNS] for o in orders
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_ORDER_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _ms(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return datetime.fromtimestamp(value / 1000, tz=UTC).isoformat(timespec="milliseconds")


def render_order(details: dict[str, Any]) -> str:
    """One order, its state history and its fills, for a terminal."""
    o = details.get("order", {})
    price = f" @ {o['price']}" if o.get("price") is not None else ""
    tif = f" {o['time_in_force']}" if o.get("time_in_force") else ""
    lines = [
        f"{o.get('client_order_id')}  account {o.get('account')} on {o.get('venue')}",
        f"  {o.get('side')} {o.get('type')} {o.get('quantity')} {o.get('symbol')}{price}{tif}",
        f"  state {o.get('state')}  filled {o.get('executed_qty')} "
        f"(quote {o.get('cum_quote_qty')})  venue order id {o.get('venue_order_id') or '-'}",
        f"  message id {o.get('message_id')}  created {_ms(o.get('created_at_ms'))}  "
        f"send attempts {o.get('send_attempts')}",
    ]
    if o.get("reject_code") is not None or o.get("reject_reason"):
        lines.append(f"  rejected: {o.get('reject_code')} {o.get('reject_reason') or ''}".rstrip())
    if o.get("cancel_requested_at_ms") is not None:
        lines.append(f"  cancel requested {_ms(o['cancel_requested_at_ms'])}")
    lines.append("history:")
    for h in details.get("history", []):
        source = h.get("from") or "(new)"
        reason = f"  {h['reason']}" if h.get("reason") else ""
        lines.append(f"  {_ms(h.get('at_ms'))}  {source} -> {h.get('to')}{reason}")
    fills = details.get("fills", [])
    lines.append("fills:" if fills else "fills: none")
    for f in fills:
        lines.append(
            f"  {_ms(f.get('time_ms'))}  trade {f.get('trade_id')}  {f.get('side')} "
            f"{f.get('quantity')} @ {f.get('price')}  fee {f.get('commission')} "
            f"{f.get('commission_asset')}"
        )
    return "\n".join(lines)
