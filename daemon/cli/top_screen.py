"""The full-screen rendering of ``tradingd top``: the sections laid out with ``rich``.

:func:`render_screen` is a pure function of what :mod:`daemon.cli.top_view`
builds from one snapshot and of the terminal's size: the header (identity,
health, reachability) on top, a footer line (key help, a prompt, the last
message) at the bottom, and the sections between, in two columns on a screen
at least :data:`TWO_COLUMNS_WIDTH` wide. Each section gets the lines it needs
when they fit, else a share in proportion (:func:`allocate`), its rows cut with
a "… N more" line: the layout never scrolls. Every text is a ``rich``
:class:`~rich.text.Text` (never markup), so nothing read from the daemon is
interpreted.

Only ``tradingd top`` on a terminal imports this module (and ``rich``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.table import Table
from rich.text import Text

from daemon.cli.top_view import (
    History,
    Row,
    Section,
    Snapshot,
    build_sections,
    cell,
    header_lines,
)

__all__ = ["allocate", "fit_widths", "render_screen"]

#: A screen at least this wide shows two columns of sections.
TWO_COLUMNS_WIDTH: Final = 120
#: Sections of the left column on a wide screen (the others go right).
LEFT_SECTIONS: Final = ("lag", "supervision", "queues")
#: Blank columns between two table columns.
COLUMN_GAP: Final = 2
#: Row styles on the terminal, by :attr:`Row.level`.
LEVEL_STYLES: Final = {"": "", "warn": "yellow", "bad": "bold red", "dim": "dim"}


def _needed(section: Section) -> int:
    """Screen lines the section takes whole (title, lines, then the header and rows of
    its table, or the line saying why there are none)."""
    table = 1 + len(section.rows) if section.rows else 1 if section.placeholder() else 0
    return 1 + len(section.lines) + table


def fit_widths(natural: Sequence[int], minimum: Sequence[int], total: int) -> list[int]:
    """Column widths within ``total``: each its ``natural`` width when all fit, else
    the widest cut first, down to its ``minimum`` (which may then not fit)."""
    widths = list(natural)
    excess = sum(widths) - total
    while excess > 0:
        candidates = [i for i, w in enumerate(widths) if w > minimum[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        others = [widths[i] for i in candidates if i != widest]
        # Down to the next widest (at least by one), no further than needed or allowed.
        step = max(1, min(excess, widths[widest] - max([minimum[widest], *others])))
        widths[widest] -= step
        excess -= step
    return widths


def allocate(needs: Sequence[int], total: int, minimum: int = 6) -> list[int]:
    """Split ``total`` lines among sections (in priority order) needing ``needs``.

    All of it when it fits. Else each, in order, gets ``min(need, minimum)``
    while that fits (the rest get 0: not shown), and the lines left over go to
    the shown ones in proportion to what they still miss. The sizes never add
    up to more than ``total``.
    """
    total = max(0, total)
    if sum(needs) <= total:
        return list(needs)
    sizes = [0] * len(needs)
    left = total
    for i, need in enumerate(needs):
        floor = min(need, minimum)
        if floor > left:
            break
        sizes[i] = floor
        left -= floor
    missing = [need - size if size else 0 for need, size in zip(needs, sizes, strict=True)]
    want = sum(missing)
    if want:
        shares = [m * left // want for m in missing]
        sizes = [size + share for size, share in zip(sizes, shares, strict=True)]
        left -= sum(shares)
        for i, m in enumerate(missing):  # what the rounding left, to the first that miss
            extra = min(left, m - shares[i])
            sizes[i] += extra
            left -= extra
    return sizes


def _styled(text: str, level: str) -> Text:
    return Text(text, style=LEVEL_STYLES.get(level, ""), no_wrap=True, overflow="ellipsis")


def _pane(section: Section, height: int, width: int) -> RenderableType:
    """The section drawn in ``height`` lines of ``width``: rows cut with a "… N more" line."""
    title = section.title + (f"  ({section.hidden} hidden by the filter)" if section.hidden else "")
    parts: list[RenderableType] = [Text(title, style="bold", no_wrap=True, overflow="ellipsis")]
    lines = list(section.lines[: max(0, height - 1)])
    parts.extend(Text(line, no_wrap=True, overflow="ellipsis") for line in lines)
    room = height - 1 - len(lines)
    if not section.rows:
        if section.placeholder() and room >= 1:
            parts.append(_styled(section.placeholder(), "dim"))
        return Group(*parts)
    room -= 1  # the header
    if room < 1:
        return Group(*parts)
    natural = [
        max(cell_len(c) for c in (column, *(r.cells[i] for r in section.rows if i < len(r.cells))))
        for i, column in enumerate(section.columns)
    ]
    minimum = [
        min(n, max(8, min(len(c), 10))) for n, c in zip(natural, section.columns, strict=True)
    ]
    widths = fit_widths(natural, minimum, width - COLUMN_GAP * (len(natural) - 1))
    table = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, COLUMN_GAP // 2),
        collapse_padding=False,
        header_style="bold underline",
    )
    for column, column_width in zip(section.columns, widths, strict=True):
        table.add_column(column, no_wrap=True, overflow="ellipsis", width=column_width)
    rows = list(section.rows)
    if len(rows) > room:
        rows = rows[: room - 1]
    for row in rows:
        table.add_row(*(_styled(c, row.level) for c in row.cells))
    parts.append(table)
    if len(rows) < len(section.rows):
        parts.append(_styled(f"… {len(section.rows) - len(rows)} more", "dim"))
    return Group(*parts)


def _column(sections: Sequence[Section], height: int, width: int) -> Layout:
    """The sections one under the other, each with a blank line after it."""
    sizes = allocate([_needed(s) + 1 for s in sections], height - 1)
    regions = [
        Layout(_pane(s, size - 1, width), size=size)
        for s, size in zip(sections, sizes, strict=True)
        if size >= 2
    ]
    left_out = [s.title.split(":")[0] for s, size in zip(sections, sizes, strict=True) if size < 2]
    if left_out:
        note = f"not shown (a taller terminal shows them): {', '.join(left_out)}"
        regions.append(Layout(_styled(note, "dim"), size=1))
    regions.append(Layout(Text(" ")))  # what is left over stays blank
    layout = Layout()
    layout.split_column(*regions)
    return layout


def render_screen(
    snapshot: Snapshot,
    history: History,
    *,
    filter_text: str = "",
    footer: str = "",
    width: int,
    height: int,
    interval_s: float = 1.0,
) -> RenderableType:
    """The full-screen view for a ``width`` by ``height`` terminal (a ``rich`` layout).

    The header (identity, health, reachability) on top, ``footer`` (key help,
    a prompt or the last message) at the bottom, the sections between: in two
    columns on a screen at least :data:`TWO_COLUMNS_WIDTH` wide.
    """
    width, height = max(20, width), max(8, height)
    head = header_lines(snapshot, history, interval_s)
    if filter_text:
        head.append(
            Row((f"filter: {cell(filter_text)}  (/ then Enter on nothing clears it)",), "warn")
        )
    head_layout = Layout(Group(*(_styled(r.cells[0], r.level) for r in head)), size=len(head))
    foot_layout = Layout(
        Text(footer or " ", style="reverse", no_wrap=True, overflow="ellipsis"), size=1
    )
    body_height = height - len(head) - 1
    two = width >= TWO_COLUMNS_WIDTH
    column_width = (width - 2) // 2 if two else width
    sections = build_sections(snapshot, history, filter_text, spark_width=column_width - 9)
    if snapshot.error is not None and snapshot.data_at is None:
        body = Layout(Text(" "))
    elif two:
        left = [s for s in sections if s.key in LEFT_SECTIONS]
        right = [s for s in sections if s.key not in LEFT_SECTIONS]
        body = Layout()
        body.split_row(
            Layout(_column(left, body_height, column_width), size=column_width),
            Layout(Text(" "), size=2),
            Layout(_column(right, body_height, width - column_width - 2)),
        )
    else:
        body = _column(sections, body_height, width)
    screen = Layout()
    screen.split_column(head_layout, body, foot_layout)
    return screen
