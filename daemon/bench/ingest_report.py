"""The report of ``tradingd bench ingest`` as a plain-text table.

:func:`render` takes the report :func:`daemon.bench.ingest.measure` returns
(the same document ``--json`` prints) and lays out the machine, where each
part ran, then each measurement as rows of *measure | result | target*,
and the warnings last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from daemon.bench.common import fmt

__all__ = ["render"]

#: Width of the measure column, and of the result column.
LABEL_W: Final = 52
RESULT_W: Final = 34


def _row(label: str, result: str, target: str = "") -> str:
    return f"   {label:<{LABEL_W}}{result:<{RESULT_W}} {target}".rstrip()


def _rate(value: float | None, unit: str = "/s") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def _three(q: Mapping[str, Any], keys: tuple[str, str, str], spec: str, unit: str) -> str:
    return " / ".join(fmt(q.get(k), spec) for k in keys) + unit


def _machine(report: Mapping[str, Any]) -> list[str]:
    m = report["machine"]
    return [
        f"machine: {m['usable_cores']} of {m['cores']} cores ({m['cpu_model']}), "
        f"{m['implementation']} {m['python']}, SQLite {m['sqlite']}, trio {m['trio']}, "
        f"{m['platform']}",
        f"load average (1 min): {fmt(m['load_average_1m_before'], '.2f')} before, "
        f"{fmt(m['load_average_1m_after'], '.2f')} after (this includes the bench's own load); "
        f"CPU pressure (PSI some avg10) {fmt(m['cpu_pressure_avg10_before'], '.1f')}% before, "
        f"{fmt(m['cpu_pressure_avg10_after'], '.1f')}% after",
        *_postgres(report),
    ]


def _postgres(report: Mapping[str, Any]) -> list[str]:
    if report.get("store_backend") != "postgres":
        return []
    return [f"store: PostgreSQL {report['machine'].get('postgresql')} at {report['dsn']}"]


def _where(setup: Mapping[str, Any]) -> list[str]:
    return [f"  {key.replace('_', ' ')}: {text}" for key, text in setup.items() if key != "options"]


def _raw(raw: Mapping[str, Any]) -> list[str]:
    s = raw["sender"]
    bound = "at least " if s["capacity_is_lower_bound"] else ""
    return [
        f"1. raw client: trio-websocket get_message + json.loads, {raw['trades']} trade frames "
        "sent flat out",
        _row("frames received per second", _rate(raw["trades_per_s"])),
        _row("client CPU per frame", f"{fmt(raw['cpu_us_per_frame'], '.1f')} us"),
        _row(
            "simulator sender capacity (frames per CPU second)",
            f"{bound}{_rate(s['capacity_per_cpu_s'])} = {fmt(s['capacity_over_raw'], '.1f')}x raw",
            f">= {s['target_over_raw']}x raw",
        ),
        _row(
            "  its CPU while sending; its wall rate",
            f"{fmt(s['cpu_s'], '.2f')} s; {_rate(s['sent_per_s_wall'])}",
            "(paced by the client)",
        ),
    ]


def _queues(q: Mapping[str, Any]) -> list[str]:
    keys = ("p50", "p90", "max")
    return [
        _row(
            f"trades queue depth p50 / p90 / max (of {q['trades_queue_capacity']})",
            _three(q["trades_queue"], keys, ".0f", f" ({q['samples']} samples)"),
        ),
        _row("stream queue depth p50 / p90 / max", _three(q["stream_queue"], keys, ".0f", "")),
    ]


def _tradingd(td: Mapping[str, Any]) -> list[str]:
    lag = td["loop_lag"]
    writer, feed = td["writer"], td["feed"]
    chunks = writer.get("chunks_committed") or 0
    mean_chunk = (writer.get("rows_inserted") or 0) / chunks if chunks else None
    return [
        f"2. tradingd end to end: {td['trades']} trades sent flat out, received -> parsed -> "
        "queued -> committed, counted from the store",
        _row("trades committed per second", _rate(td["trades_per_s"])),
        _row("ratio tradingd / raw client", _x(td["ratio_to_raw"]), f">= {td['target_ratio']}x"),
        _row(
            "tradingd CPU per trade (net of idle)",
            f"{fmt(td['cpu_us_per_trade'], '.1f')} us ({fmt(td['cpu_us_per_trade_net'], '.1f')})",
            f"{fmt(td['cpu_share'], '.2f')} cores busy",
        ),
        _row(
            "loop lag p50 / p99 / max",
            _three(lag, ("p50_ms", "p99_ms", "max_ms"), ".2f", f" ms ({lag['reads']} reads)"),
            f"p99 <= {lag['target_p99_ms']:g} ms",
        ),
        _row(
            "RSS before / after / peak (VmHWM)",
            f"{td['rss_mb_before']:.1f} / {td['rss_mb_after']:.1f} / {td['peak_rss_mb']:.1f} MB",
        ),
        *_queues(td["queues"]),
        _row(
            "writer: batches, chunks (mean rows per chunk)",
            f"{writer.get('batches')}, {chunks} ({fmt(mean_chunk, '.0f')})",
        ),
        _row(
            "feed: waits on a full trades queue (total s)",
            f"{feed.get('put_waits')} ({fmt(feed.get('put_wait_s_total'), '.2f')} s)",
        ),
    ]


def _pg_store(st: Mapping[str, Any]) -> list[str]:
    raw, many, td = st["raw"], st["raw_executemany"], st["tradingd"]

    def rate(side: Mapping[str, Any]) -> str:
        return (
            f"{_rate(side['rows_per_s'])} ({fmt(side['cpu_us_per_row'], '.2f')} + "
            f"{fmt(side['server_cpu_us_per_row'], '.2f')} us)"
        )

    return [
        f"3. store write: {st['rows']} rows x {st['rounds']} round(s), chunks of "
        f"{st['chunk_size']}, synchronous_commit={st['synchronous_commit']}, PostgreSQL, "
        "tradingd's schema emptied before each round",
        _row("rows/s (CPU per row: bench process + server backend)", ""),
        _row("raw psycopg binary COPY + INSERT ... SELECT", rate(raw)),
        _row("raw psycopg executemany", rate(many)),
        _row("tradingd MarketDataStore.insert_trades", rate(td)),
        _row("ratio tradingd / raw COPY", _x(st["ratio"]), f">= {st['target_ratio']}x"),
        _row("ratio tradingd / raw executemany", _x(st["ratio_to_executemany"])),
    ]


def _store(st: Mapping[str, Any]) -> list[str]:
    if st.get("backend") == "postgres":
        return _pg_store(st)
    raw, td = st["raw"], st["tradingd"]
    return [
        f"3. store write: {st['rows']} rows x {st['rounds']} round(s), chunks of "
        f"{st['chunk_size']}, synchronous={st['synchronous']}, fresh files, tradingd's schema",
        _row(
            "raw sqlite3 executemany, rows/s (CPU per row)",
            f"{_rate(raw['rows_per_s'])} ({fmt(raw['cpu_us_per_row'], '.2f')} us)",
        ),
        _row(
            "tradingd MarketDataStore.insert_trades, rows/s",
            f"{_rate(td['rows_per_s'])} ({fmt(td['cpu_us_per_row'], '.2f')} us)",
        ),
        _row("ratio tradingd / raw", _x(st["ratio"]), f">= {st['target_ratio']}x"),
    ]


def _health(h: Mapping[str, Any]) -> list[str]:
    levels = ", ".join(f"{k} {v:g} s" for k, v in h["seconds_by_level"].items()) or "-"
    lines = [_row("/health while overloaded", levels, f"HTTP {h['http_codes']}")]
    if h["first_not_healthy_at_s"] is not None:
        lines.append(_row("  first not healthy after", f"{h['first_not_healthy_at_s']:.2f} s"))
    lines += [
        f"     reason: {r['reason']} (from {r['first_at_s']:g} s, in {r['reads']} reads)"
        for r in h["reasons"]
    ]
    return lines


def _overload(ov: Mapping[str, Any] | None) -> list[str]:
    if ov is None:
        return ["4. overload: not run (--overload-s 0)"]
    gaps, repair = ov["gaps"], ov["repair"]
    capped = " (capped at the sender's capacity)" if ov["rate_capped_at_sender_capacity"] else ""
    stopped = "; sender stopped at the deadline" if ov["sender_stopped_at_deadline"] else ""
    runs = len(ov["runs"])
    return [
        f"4. overload: {ov['trades']} trades ({runs} run{'s' if runs > 1 else ''}) paced at "
        f"{_rate(ov['rate_asked_per_s'])}{capped} = {ov['factor']:g}x tradingd's rate, "
        f"for about {ov['target_s']:g} s",
        _row(
            "lasted; trades committed per second",
            f"{ov['seconds']:.1f} s; {_rate(ov['trades_per_s'])}{stopped}",
        ),
        _row(
            "RSS growth (before -> max)",
            f"{ov['rss_growth_mb']:.1f} MB ({ov['rss_mb_before']:.1f} -> {ov['rss_mb_max']:.1f})",
            f"<= {ov['target_rss_growth_mb']:g} MB",
        ),
        _store_size(ov),
        _row(
            "trades lost (missing and in no recorded gap)",
            f"{gaps['lost_unrecorded']} of ids {ov['checked_ids'][0]}..{ov['checked_ids'][1]}",
            "0",
        ),
        _row(
            "missing after the overload -> after repair",
            f"{repair['missing_before']} -> {gaps['missing_trades']} "
            f"(waited {repair['waited_s']:g} s of {repair['wait_bound_s']:g})",
        ),
        _row("gaps recorded by state", str(gaps["gaps_by_state"] or "none")),
        *_health(ov["health"]),
        _row(
            "loop lag p50 / p99 / max",
            _three(ov["loop_lag"], ("p50_ms", "p99_ms", "max_ms"), ".2f", " ms"),
        ),
        _row(
            "consumer lag (event -> commit) p50 / max",
            f"{fmt(ov['consumer_lag_ms']['p50'], '.0f')} / "
            f"{fmt(ov['consumer_lag_ms']['max'], '.0f')} ms",
        ),
        _row("stream reconnects", str(ov["stream_reconnects"])),
        *_queues(ov["queues"]),
    ]


def _store_size(ov: Mapping[str, Any]) -> str:
    sizes = f"{ov['store_file_mb_before']:.1f} -> {ov['store_file_mb_after']:.1f} MB"
    if ov["store_page_cache_max_mb"] is None:  # PostgreSQL: the cache is the server's
        return _row("  store schema on the server meanwhile", sizes)
    return _row(
        "  store file meanwhile (SQLite page cache up to)",
        f"{sizes} ({ov['store_page_cache_max_mb']:g} MB)",
    )


def render(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (``--json`` prints it as JSON instead)."""
    header = _row("measure", "result", "target")
    postgres = report.get("store_backend") == "postgres"
    lines = [
        "tradingd bench ingest" + (" --store postgres" if postgres else ""),
        *_machine(report),
        "where:",
        *_where(report["setup"]),
        "",
        header,
        *_raw(report["raw"]),
        "",
        *_tradingd(report["tradingd"]),
        "",
        *_store(report["store"]),
        "",
        *_overload(report["overload"]),
        "",
    ]
    if report["warnings"]:
        lines += ["warnings:", *(f"  - {w}" for w in report["warnings"]), ""]
    lines.append(f"bench time {report['bench_seconds']:.1f} s")
    return "\n".join(lines)
