"""The ingest bench's arithmetic: sampled series, loop lag, trades lost, what ``/health`` said.

Pure functions over what the phases recorded (no I/O), so each is checked
on its own (``tests/bench/test_ingest.py``):

* :func:`summarize` — count, min, p50/p90/p99 (nearest rank, as the
  daemon's own percentiles), max and mean of a sampled series;
* :func:`lag_summary` — the loop lag over a phase, from the daemon's
  ``/status`` reads (each one a summary of its probe's last window);
* :func:`gap_accounting` — the ids missing from the store against the gaps
  the daemon recorded: a missing id no gap covers is a trade *lost*;
* :func:`health_summary` — the levels and reasons ``/health`` gave while sampled.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "gap_accounting",
    "health_summary",
    "lag_summary",
    "nearest_rank",
    "reason_kind",
    "summarize",
    "uncovered",
]


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (``0 < q <= 1``) of ascending ``sorted_values``, by nearest rank.

    The smallest value such that at least ``q`` of the values are at most it
    (never interpolated, so it is a value that was measured). Raises
    :class:`ValueError` for no values.
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Iterable[float | None], digits: int = 3) -> dict[str, Any]:
    """``count``, ``min``, ``p50``, ``p90``, ``p99``, ``max``, ``mean`` (``None``\\ s skipped)."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return dict.fromkeys(("min", "p50", "p90", "p99", "max", "mean"), None) | {"count": 0}

    def r(x: float) -> float:
        return round(x, digits)

    return {
        "count": len(ordered),
        "min": r(ordered[0]),
        "p50": r(nearest_rank(ordered, 0.5)),
        "p90": r(nearest_rank(ordered, 0.9)),
        "p99": r(nearest_rank(ordered, 0.99)),
        "max": r(ordered[-1]),
        "mean": r(sum(ordered) / len(ordered)),
    }


def lag_summary(reads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The loop lag over a phase from the daemon's window summaries (``/status`` ``loop_lag``).

    Each read holds ``p50_ms``, ``p99_ms``, ``max_ms`` and ``samples`` of the
    probe's last window; windows of consecutive reads overlap, so every probe
    sample is in at least one. The phase's ``max_ms`` is the largest window
    maximum (exact); ``p50_ms`` the median of the window medians;
    ``p99_ms`` the 99th percentile of the window p99s — with a handful of
    samples per window a window's p99 is its maximum, so this errs high.
    Reads of an empty window are skipped.
    """
    windows = [r for r in reads if r.get("samples")]
    if not windows:
        return {"reads": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    p50s = sorted(float(r["p50_ms"]) for r in windows)
    p99s = sorted(float(r["p99_ms"]) for r in windows)
    return {
        "reads": len(windows),
        "p50_ms": round(nearest_rank(p50s, 0.5), 3),
        "p99_ms": round(nearest_rank(p99s, 0.99), 3),
        "max_ms": round(max(float(r["max_ms"]) for r in windows), 3),
    }


Range = tuple[int, int]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def uncovered(holes: Iterable[Range], covers: Iterable[Range]) -> list[Range]:
    """The parts of the inclusive ranges ``holes`` that no range of ``covers`` contains."""
    merged: list[list[int]] = []
    for lo, hi in sorted(covers):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    out: list[Range] = []
    for lo, hi in sorted(holes):
        start = lo
        for c_lo, c_hi in merged:
            if c_hi < start:
                continue
            if c_lo > hi:
                break
            if c_lo > start:
                out.append((start, c_lo - 1))
            start = max(start, c_hi + 1)
            if start > hi:
                break
        if start <= hi:
            out.append((start, hi))
    return out


def gap_accounting(holes: Sequence[Range], gaps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ids missing from the store (``holes``) against the daemon's gap records.

    A missing id inside a recorded gap (any state: open, unrecoverable — or
    backfilled, which would be a lie the report shows as ``backfilled_but_missing``)
    is accounted for; one that no record covers is lost without a trace.
    ``gaps`` are rows of the gaps table (``from_id``, ``to_id``, ``state``).
    """
    states: Counter[str] = Counter(str(g["state"]) for g in gaps)
    gap_trades: Counter[str] = Counter()
    for g in gaps:
        gap_trades[str(g["state"])] += int(g["to_id"]) - int(g["from_id"]) + 1
    lost = uncovered(holes, [(int(g["from_id"]), int(g["to_id"])) for g in gaps])
    backfilled = [
        (int(g["from_id"]), int(g["to_id"]))
        for g in gaps
        if str(g["state"]).lower() == "backfilled"
    ]
    still_missing = sum(b - a + 1 for a, b in holes)
    claimed_filled = still_missing - sum(b - a + 1 for a, b in uncovered(holes, backfilled))
    return {
        "holes": len(holes),
        "missing_trades": still_missing,
        "lost_unrecorded": sum(b - a + 1 for a, b in lost),
        "unrecorded_ranges": [list(r) for r in lost[:20]],
        "gaps_by_state": dict(sorted(states.items())),
        "gap_trades_by_state": dict(sorted(gap_trades.items())),
        "backfilled_but_missing": claimed_filled,
    }


def reason_kind(reason: str) -> str:
    """A health reason with its numbers replaced by ``#`` (the same condition, changing figures)."""
    return _NUMBER.sub("#", reason)


def health_summary(reads: Sequence[Mapping[str, Any]], interval_s: float) -> dict[str, Any]:
    """What ``/health`` said over a phase: time per level, its reasons, HTTP codes.

    ``reads`` are ``{"t_s", "code", "level", "reasons"}`` in time order, one
    every ``interval_s``; a level's time is its reads times ``interval_s``.
    Reasons that differ only in their figures (a lag growing from 30.1 s to
    30.4 s) are one: the first one is shown, with when it was first given
    and in how many reads.
    """
    levels: Counter[str] = Counter()
    codes: Counter[int] = Counter()
    reasons: dict[str, dict[str, Any]] = {}
    first_not_healthy: float | None = None
    for read in reads:
        level = str(read.get("level"))
        levels[level] += 1
        codes[int(read.get("code", 0))] += 1
        if level != "healthy" and first_not_healthy is None:
            first_not_healthy = float(read["t_s"])
        kinds = {reason_kind(str(r)): str(r) for r in read.get("reasons") or ()}
        for kind, reason in kinds.items():
            seen = reasons.setdefault(
                kind, {"reason": reason, "first_at_s": round(float(read["t_s"]), 2), "reads": 0}
            )
            seen["reads"] += 1
    return {
        "reads": len(reads),
        "seconds_by_level": {k: round(v * interval_s, 2) for k, v in sorted(levels.items())},
        "http_codes": {str(k): v for k, v in sorted(codes.items())},
        "first_not_healthy_at_s": first_not_healthy,
        "reasons": list(reasons.values())[:10],
    }
