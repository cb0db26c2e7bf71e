"""What ``tradingd top`` shows: a pure function of what it read from the daemon.

:func:`build_sections` turns one :class:`Snapshot` (the status document and the
answers to ``orders list``, ``positions``, ``trading`` and ``dead-letters
list``, as read) plus the client-side :class:`History` (loop-lag samples of the
last minute, the daemon's pid) into :class:`Section` values: a title, a few
lines, a table. Two renderers draw the same sections: :func:`render_text`
(plain text, one block per refresh when stdout is not a terminal) and
:func:`daemon.cli.top_screen.render_screen` (a ``rich`` layout sized to the
terminal). Nothing here reads a socket or a terminal, or imports ``rich``, so
all of it is tested with documents alone.

Everything read from the daemon is hostile input: any value may be missing, of
another type, huge, non-finite or full of terminal escape sequences. Every
value goes through :func:`cell` (strings: control characters replaced, cut to
:data:`CELL_CHARS`) or :func:`number` (finite numbers only); what cannot be
shown is ``-``. Lists are read up to :data:`MAX_ITEMS` items, trees down to
:data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "History",
    "Row",
    "Section",
    "Snapshot",
    "build_sections",
    "cell",
    "header_lines",
    "number",
    "render_text",
    "sparkline",
]

#: Longest text of one cell (names, errors); longer ones end in "…".
CELL_CHARS: Final = 60
#: Items read from any one list or mapping of the daemon's answers.
MAX_ITEMS: Final = 500
#: Deepest supervision level shown.
MAX_DEPTH: Final = 8
#: Seconds of loop-lag history kept for the sparkline.
SPAN_S: Final = 60.0
#: Rows of one section in the plain-text rendering (the rest is counted).
TEXT_ROWS: Final = 40
SPARK_BLOCKS: Final = "▁▂▃▄▅▆▇█"
_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_GOOD_STATES: Final = frozenset({"running", "up", "healthy", "synced", "active"})
_FINISHED_ORDER_STATES: Final = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})


# ---------------------------------------------------------------------------- hostile values


def number(value: object) -> float | None:
    """A finite number, or None (bools, strings, NaN, infinities and overflows are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def cell(value: object, limit: int = CELL_CHARS) -> str:
    """``value`` as safe text for a terminal: ``-`` unless a string, number or bool.

    Control and format characters (escape sequences, bidi overrides, lone
    surrogates) become ``?``; the text is cut to ``limit`` characters.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = str(value) if -(10**18) < value < 10**18 else "huge"
    elif isinstance(value, float):
        text = f"{value:g}" if math.isfinite(value) else "-"
    elif isinstance(value, str):
        text = value
    else:
        return "-"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return text or "-"


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value[:MAX_ITEMS] if isinstance(value, list) else []


def _items(value: object) -> list[tuple[str, Any]]:
    """The first :data:`MAX_ITEMS` entries of a mapping (keys are strings in JSON)."""
    if not isinstance(value, dict):
        return []
    out = []
    for i, item in enumerate(value.items()):
        if i >= MAX_ITEMS:
            break
        out.append(item)
    return out


def _get(value: object, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ms(value: object) -> str:
    n = number(value)
    return "-" if n is None else cell(f"{n:.1f}ms")


def _age(seconds: object) -> str:
    """A duration as ``0.8s``, ``42s``, ``5m03s``, ``3h12m``, ``4d05h``."""
    s = number(seconds)
    if s is None or s < 0:
        return "-"
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86_400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return cell(f"{int(s // 86_400)}d{int(s % 86_400 // 3600):02d}h", 12)


def _clock(epoch_s: object) -> str:
    """Local ``HH:MM:SS`` of a Unix time in seconds."""
    s = number(epoch_s)
    if s is None or not 0 <= s < 1e11:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(s))


def _decimal(value: object) -> str:
    """A decimal string without its trailing zeros (``0.00100000`` → ``0.001``)."""
    text = cell(value)
    if _DECIMAL.fullmatch(text) and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _state_level(state: str) -> str:
    return "" if state in _GOOD_STATES or state == "-" else "warn"


# ---------------------------------------------------------------------------- the model


@attrs.frozen
class Snapshot:
    """One refresh: what the daemon answered, as read (any of it may be malformed).

    Attributes:
        at: Unix time of the reading (ages of wall-clock stamps are taken against it).
        status: the ``status`` answer's document.
        orders: ``orders list`` rows (newest first), or None.
        positions: ``positions`` rows, or None.
        trading: the ``trading`` (show) answer, or None.
        dead_letters: ``dead-letters list`` rows (one page), or None.
        problems: why a part is missing, by part (e.g. no accounts configured).
        error: why the daemon is not reachable; the rest is then the last data read.
        data_at: Unix time of that last data (None: never read).
    """

    at: float
    status: Any = None
    orders: Any = None
    positions: Any = None
    trading: Any = None
    dead_letters: Any = None
    problems: dict[str, str] = attrs.field(factory=dict)
    error: str | None = None
    data_at: float | None = None


class History:
    """What top keeps between refreshes: loop-lag p99 of the last :data:`SPAN_S`
    seconds (None where the daemon was not reachable) and the daemon's pid."""

    def __init__(self) -> None:
        self._lag: deque[tuple[float, float | None]] = deque()
        self.pid: int | None = None
        #: "restarted: pid A → B at HH:MM:SS", once a new pid has answered.
        self.restart: str | None = None

    def record(self, snapshot: Snapshot) -> None:
        if snapshot.error is not None:
            self._lag.append((snapshot.at, None))
        else:
            status = _dict(snapshot.status)
            self._lag.append((snapshot.at, number(_get(status, "loop_lag", "p99_ms"))))
            pid = _int(status.get("pid"))
            if pid is not None:
                if self.pid is not None and pid != self.pid:
                    self.restart = f"restarted: pid {self.pid} → {pid} at {_clock(snapshot.at)}"
                self.pid = pid
        while self._lag and self._lag[0][0] < snapshot.at - SPAN_S:
            self._lag.popleft()

    def lag_samples(self) -> tuple[tuple[float, float | None], ...]:
        return tuple(self._lag)


def sparkline(
    samples: Sequence[tuple[float, float | None]], now: float, width: int, span_s: float = SPAN_S
) -> str:
    """The samples of the last ``span_s`` seconds in at most ``width`` characters, newest
    on the right, each the highest of the samples it stands for, on a scale to the
    highest of all; ``·`` where the daemon was not reachable (a None sample)."""
    width = max(1, width)
    recent = [value for at, value in samples if 0 <= now - at < span_s]
    if len(recent) > width:
        step = -(-len(recent) // width)
        groups = [recent[i : i + step] for i in range(0, len(recent), step)]
        recent = [max((v for v in g if v is not None), default=None) for g in groups]
    values = [v for v in recent if v is not None]
    top = max([1.0, *values])
    top_index = len(SPARK_BLOCKS) - 1
    line = "".join(
        "·" if v is None else SPARK_BLOCKS[min(top_index, max(0, round(v / top * top_index)))]
        for v in recent
    )
    return line.rjust(width)


@attrs.frozen
class Row:
    """One table row: cells already made safe, and how it is highlighted."""

    cells: tuple[str, ...]
    level: str = ""


@attrs.frozen
class Section:
    """One pane: a title, lines of text, then a table (``rows`` under ``columns``).

    ``hidden`` counts rows the filter left out; ``filterable`` sections are the
    ones the ``/`` filter applies to.
    """

    key: str
    title: str
    lines: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[Row, ...] = ()
    hidden: int = 0
    empty: str = ""

    def placeholder(self) -> str:
        """What stands for a table without rows: why there are none (or nothing)."""
        if self.rows or not self.columns:
            return ""
        return "nothing matches the filter" if self.hidden else self.empty


# ---------------------------------------------------------------------------- sections


def build_sections(
    snapshot: Snapshot, history: History, filter_text: str = "", *, spark_width: int = 60
) -> list[Section]:
    """Every pane of the view, most important first; the rows of table panes filtered by
    ``filter_text`` (a case-insensitive substring of any cell)."""
    status = _dict(snapshot.status)
    now = snapshot.at
    sections = [
        _lag_section(status, history, now, spark_width),
        _supervision_section(status),
        _queues_section(status),
        _venues_section(status, now),
        _orders_section(status, snapshot),
        _positions_section(snapshot),
        _dead_letters_section(snapshot),
        _slow_steps_section(status),
    ]
    needle = filter_text.casefold()
    if not needle:
        return sections
    filtered = []
    for section in sections:
        kept = tuple(r for r in section.rows if any(needle in c.casefold() for c in r.cells))
        filtered.append(
            attrs.evolve(section, rows=kept, hidden=section.hidden + len(section.rows) - len(kept))
        )
    return filtered


def header_lines(snapshot: Snapshot, history: History, interval_s: float) -> list[Row]:
    """The view's first lines: identity, health and its reasons, reachability."""
    status = _dict(snapshot.status)
    every = f"every {interval_s:g}s"
    rows: list[Row] = []
    if snapshot.error is not None:
        since = f"; data below from {_clock(snapshot.data_at)}" if snapshot.data_at else ""
        rows.append(
            Row(
                (f"NOT REACHABLE: {cell(snapshot.error, 200)} (asking again {every}){since}",),
                "bad",
            )
        )
    if status:
        rows.append(
            Row(
                (
                    f"tradingd {cell(status.get('version'))}  pid {cell(_int(status.get('pid')))}"
                    f"  {cell(status.get('state'))}  up {_age(status.get('uptime_s'))}"
                    f"  config {cell(status.get('config'))}  {_clock(snapshot.at)} {every}",
                )
            )
        )
        health = _dict(status.get("health"))
        level = cell(health.get("level"))
        reasons = [cell(r, 120) for r in _list(health.get("reasons"))[:5]]
        text = f"health: {level}" + (f" ({'; '.join(reasons)})" if reasons else "")
        rows.append(Row((text,), {"healthy": "", "degraded": "warn"}.get(level, "bad")))
    elif snapshot.error is None:
        why = snapshot.problems.get("status") or "no status document in the answer"
        rows.append(Row((f"{cell(why, 200)}  {_clock(snapshot.at)}",), "bad"))
    if history.restart:
        rows.append(Row((history.restart,), "warn"))
    return rows


def _lag_section(status: dict[str, Any], history: History, now: float, spark_width: int) -> Section:
    lag = _dict(status.get("loop_lag"))
    samples = _int(lag.get("samples"))
    lines = [
        f"p50 {_ms(lag.get('p50_ms'))}  p99 {_ms(lag.get('p99_ms'))}  "
        f"max {_ms(lag.get('max_ms'))}  ({cell(samples)} samples)",
        f"p99 {SPAN_S:.0f}s {sparkline(history.lag_samples(), now, spark_width)}",
    ]
    store = _dict(status.get("store"))
    if store:
        stats = _dict(store.get("stats"))
        lines.append(
            f"store {cell(store.get('backend'))} {cell(_get(store, 'health', 'level'))}"
            f"  schema {cell(_int(store.get('schema_version')))}"
            f"  writes {cell(_int(stats.get('writes')))}"
            f"  errors {cell(_int(stats.get('write_errors')))}"
        )
    intake = status.get("intake")
    if isinstance(intake, dict):
        lines.append(
            f"intake {cell(intake.get('state') or intake.get('connected'))}"
            f"  {cell(intake.get('last_error'))}"
        )
    return Section("lag", "loop lag", lines=tuple(lines))


def _tree_rows(tree: object, depth: int, out: list[Row]) -> None:
    node = _dict(tree)
    if not node or depth > MAX_DEPTH or len(out) >= MAX_ITEMS:
        return
    for child in _list(node.get("children")):
        c = _dict(child)
        state = cell(c.get("state"))
        age = number(c.get("heartbeat_age_s"))
        stale = c.get("heartbeat_stale") is True
        heartbeat = "-" if age is None else _age(age) + (" STALE" if stale else "")
        error = c.get("last_error")
        level = "bad" if stale or (error and state != "running") else _state_level(state)
        out.append(
            Row(
                (
                    "  " * depth + cell(c.get("name")),
                    state,
                    cell(_int(c.get("restarts"))),
                    heartbeat,
                    cell(error, 120) if error else "",
                ),
                level,
            )
        )
        _tree_rows(c.get("supervisor"), depth + 1, out)


def _supervision_section(status: dict[str, Any]) -> Section:
    rows: list[Row] = []
    root = _dict(status.get("supervision"))
    trees = [root] if root else []
    for _venue, md in _items(status.get("marketdata")):
        sup = _dict(_dict(md).get("supervision"))
        if sup:
            trees.append(sup)
    for tree in trees:
        state = cell(tree.get("state"))
        rows.append(
            Row(
                (
                    f"{cell(tree.get('name'))} [{cell(tree.get('strategy'))}]",
                    state,
                    cell(_int(tree.get("total_restarts"))),
                    "",
                    "",
                ),
                "bad" if tree.get("escalated") is True else _state_level(state),
            )
        )
        _tree_rows(tree, 1, rows)
    return Section(
        "supervision",
        "supervision",
        columns=("NAME", "STATE", "RESTARTS", "HEARTBEAT", "LAST ERROR"),
        rows=tuple(rows),
        empty="no supervision tree",
    )


def _queues_section(status: dict[str, Any]) -> Section:
    oldest: dict[str, object] = {}
    for _venue, md in _items(status.get("marketdata")):
        for _kind, q in _items(_dict(md).get("queues")):
            name = _dict(q).get("name")
            if isinstance(name, str):
                oldest[name] = _dict(q).get("oldest_age_s")
    rows = []
    for item in _list(status.get("queues")):
        q = _dict(item)
        depth, capacity = number(q.get("depth")), number(q.get("capacity"))
        full = depth is not None and capacity is not None and capacity > 0 and depth >= capacity
        dropped = _int(q.get("dropped"))
        rows.append(
            Row(
                (
                    cell(q.get("name")),
                    f"{cell(_int(q.get('depth')))}/{cell(_int(q.get('capacity')))}",
                    _age(oldest.get(cell(q.get("name")))),
                    cell(q.get("overflow")),
                    cell(dropped),
                    f"{cell(q.get('producer'))} → {cell(q.get('consumer'))}",
                ),
                "bad" if full else "warn" if dropped else "",
            )
        )
    dispatch = _dict(_get(status, "orders", "dispatch"))
    for name, depth in _items(dispatch.get("queues")):
        rows.append(
            Row(
                (
                    f"orders.{cell(name)}",
                    f"{cell(_int(depth))}/{cell(_int(dispatch.get('capacity')))}",
                    "-",
                    "block",
                    "-",
                    f"entry → {cell(name)}",
                )
            )
        )
    return Section(
        "queues",
        "queues",
        columns=("NAME", "DEPTH", "OLDEST", "OVERFLOW", "DROPPED", "PRODUCER → CONSUMER"),
        rows=tuple(rows),
        empty="no queues",
    )


def _rate_usage(client: dict[str, Any]) -> str:
    """The busiest rate-limit window: ``NAME 37%``."""
    best: tuple[float, str] | None = None
    for name, window in _items(_get(client, "limiter", "windows")):
        used, limit = number(_dict(window).get("used")), number(_dict(window).get("limit"))
        if used is None or limit is None or limit <= 0:
            continue
        share = used / limit
        if best is None or share > best[0]:
            best = (share, name)
    if best is None:
        return "-"
    return f"{cell(best[1], 24)} {min(best[0], 99.99) * 100:.0f}%"


def _breaker(venue: dict[str, Any]) -> str:
    """A circuit breaker's state where the venue reports one; else the venue's own
    breaker: its rate limiter frozen by a 429/418 ``Retry-After`` (``frozen 12s``)."""
    for path in (("breaker",), ("client", "breaker"), ("ws_api_orders", "breaker")):
        found = _get(venue, *path, "state")
        if found is not None:
            return cell(found)
    frozen = number(_get(venue, "client", "limiter", "frozen_for_s"))
    return f"frozen {_age(frozen)}" if frozen is not None and frozen > 0 else "-"


def _venues_section(status: dict[str, Any], now: float) -> Section:
    streams = _dict(_get(status, "orders", "user_streams"))
    rows = []
    for name, item in _items(status.get("venues")):
        venue = _dict(item)
        state = cell(venue.get("state"))
        md = _dict(_dict(status.get("marketdata")).get(name))
        commits = [number(_dict(s).get("last_commit_at")) for _sym, s in _items(md.get("symbols"))]
        last_commit = max((c for c in commits if c is not None), default=None)
        stream = _dict(streams.get(name))
        last_event = number(stream.get("last_event_ms"))
        breaker = _breaker(venue)
        rows.append(
            Row(
                (
                    cell(name),
                    state,
                    _age(now - last_commit) if last_commit is not None else "-",
                    _age(now - last_event / 1000) if last_event is not None else "-",
                    _rate_usage(_dict(venue.get("client"))),
                    breaker,
                    cell(stream.get("fill_source")),
                    cell(venue.get("last_error"), 120) if venue.get("last_error") else "",
                ),
                "bad" if breaker not in ("-", "closed") else _state_level(state),
            )
        )
    return Section(
        "venues",
        "venues",
        columns=(
            "VENUE",
            "STATE",
            "MD AGE",
            "USER AGE",
            "RATE LIMIT",
            "BREAKER",
            "FILLS",
            "LAST ERROR",
        ),
        rows=tuple(rows),
        empty="no venues",
    )


def _orders_section(status: dict[str, Any], snapshot: Snapshot) -> Section:
    counts = _dict(_get(status, "orders", "orders"))
    by_state = "  ".join(
        f"{cell(state, 16)} {cell(_int(n))}" for state, n in _items(counts.get("by_state"))
    )
    lines = [
        f"live {cell(_int(counts.get('live')))}  unknown {cell(_int(counts.get('unknown')))}"
        f"  fills {cell(_int(counts.get('fills')))}"
        + (f"  by state: {by_state}" if by_state else "")
    ]
    effective = _dict(_dict(snapshot.trading).get("effective"))
    if effective:
        lines.append(
            "trading: " + "  ".join(f"{cell(a, 24)} {cell(s, 12)}" for a, s in _items(effective))
        )
    if "orders" in snapshot.problems:
        lines.append(f"orders: {cell(snapshot.problems['orders'], 120)}")
    listed = [_dict(o) for o in _list(snapshot.orders)]
    listed.sort(key=lambda o: number(o.get("updated_at_ms")) or 0.0, reverse=True)
    rows = []
    for o in listed:
        state = cell(o.get("state"))
        updated = number(o.get("updated_at_ms"))
        price = o.get("price")
        rows.append(
            Row(
                (
                    _clock(updated / 1000) if updated is not None else "-",
                    cell(o.get("client_order_id")),
                    cell(o.get("account")),
                    cell(o.get("symbol")),
                    cell(o.get("side")),
                    _decimal(o.get("quantity"))
                    + ("" if price is None else f" @ {_decimal(price)}"),
                    _decimal(o.get("executed_qty")),
                    state,
                ),
                "dim" if state in _FINISHED_ORDER_STATES else "bad" if state == "UNKNOWN" else "",
            )
        )
    return Section(
        "orders",
        "orders",
        lines=tuple(lines),
        columns=(
            "UPDATED",
            "CLIENT ORDER ID",
            "ACCOUNT",
            "SYMBOL",
            "SIDE",
            "QTY",
            "FILLED",
            "STATE",
        ),
        rows=tuple(rows),
        empty="no orders",
    )


def _positions_section(snapshot: Snapshot) -> Section:
    rows = []
    for item in _list(snapshot.positions):
        p = _dict(item)
        quantity = _decimal(p.get("quantity"))
        flat = quantity.strip("-0.") == ""
        rows.append(
            Row((cell(p.get("account")), cell(p.get("symbol")), quantity), "dim" if flat else "")
        )
    problem = snapshot.problems.get("positions")
    return Section(
        "positions",
        "positions",
        lines=(f"positions: {cell(problem, 120)}",) if problem else (),
        columns=("ACCOUNT", "SYMBOL", "QUANTITY"),
        rows=tuple(rows),
        empty="no positions",
    )


def _slow_steps_section(status: dict[str, Any]) -> Section:
    slow = _dict(status.get("slow_steps"))
    steps = [_dict(s) for s in _list(slow.get("slowest"))]
    steps.sort(key=lambda s: number(s.get("duration_ms")) or 0.0, reverse=True)
    lines: tuple[str, ...] = ()
    if slow:
        lines = (
            f"{cell(_int(slow.get('slow_steps_total')))} steps over "
            f"{_ms(slow.get('threshold_ms'))} of {cell(_int(slow.get('steps_total')))}",
        )
    threshold = number(slow.get("threshold_ms"))
    rows = tuple(
        Row(
            (_ms(s.get("duration_ms")), cell(s.get("task"), 80), _clock(s.get("at"))),
            "warn"
            if threshold is not None and (number(s.get("duration_ms")) or 0.0) >= threshold
            else "",
        )
        for s in steps
    )
    return Section(
        "slow_steps",
        "slowest task steps",
        lines=lines,
        columns=("DURATION", "TASK", "AT"),
        rows=rows,
        empty="no step timings in the status",
    )


def _dead_letters_section(snapshot: Snapshot) -> Section:
    letters = _list(snapshot.dead_letters)
    problem = snapshot.problems.get("dead_letters")
    if snapshot.dead_letters is None:
        title = "dead letters: -"
    else:
        more = "+" if len(letters) >= 1000 else ""
        title = f"dead letters: {len(letters)}{more}"
    by_source: dict[str, int] = {}
    for letter in letters:
        source = cell(_dict(letter).get("source"))
        by_source[source] = by_source.get(source, 0) + 1
    rows = tuple(Row((source, str(n)), "warn") for source, n in sorted(by_source.items()))
    return Section(
        "dead_letters",
        title,
        lines=(f"{cell(problem, 120)}",) if problem else (),
        columns=("SOURCE", "LETTERS"),
        rows=rows,
    )


# ---------------------------------------------------------------------------- plain text


def _text_table(section: Section, max_rows: int) -> Iterator[str]:
    yield section.title + (f"  ({section.hidden} hidden by the filter)" if section.hidden else "")
    yield from (f"  {line}" for line in section.lines)
    if not section.rows:
        if section.placeholder():
            yield f"  {section.placeholder()}"
        return
    shown = section.rows[:max_rows]
    table = [section.columns, *(r.cells for r in shown)]
    widths = [max(len(row[i]) for row in table) for i in range(len(section.columns))]
    for row in table:
        yield "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
    if len(section.rows) > max_rows:
        yield f"  … {len(section.rows) - max_rows} more"


def render_text(
    snapshot: Snapshot,
    history: History,
    filter_text: str = "",
    *,
    interval_s: float = 1.0,
    max_rows: int = TEXT_ROWS,
) -> str:
    """The whole view as plain text (what ``tradingd top`` prints when not on a terminal)."""
    lines = [r.cells[0] for r in header_lines(snapshot, history, interval_s)]
    if snapshot.error is not None and snapshot.data_at is None:
        return "\n".join(lines)
    if filter_text:
        lines.append(f"filter: {cell(filter_text)}")
    for section in build_sections(snapshot, history, filter_text):
        lines.append("")
        lines.extend(_text_table(section, max_rows))
    return "\n".join(lines)
