"""The report of ``tradingd bench orders`` as a plain-text table.

:func:`render` takes the report :func:`daemon.bench.orders.measure_transports`
returns (the same document ``--json`` prints) and lays out the machine, where
each part ran and the three measurements with their targets. A report of
several transports (``--transport both``) is laid out in one table: the
machine once, then in each measurement a block of rows per transport, after
a summary with one line per transport. A ``--profile`` run ends with the
CPU budget per stage (:func:`~daemon.bench.orders_profile.render_profile`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from daemon.bench.common import fmt
from daemon.bench.orders_profile import render_profile

__all__ = ["render"]

#: The raw baseline of each transport, as its latency row names it.
BASELINE_LABELS: Final = {
    "rest": "baseline: signed httpx2 POST + 2 FULL commits",
    "ws-api": "baseline: signed ws-api order.place + 2 FULL commits",
}
#: The same with ``--store postgres`` (the commits on the PostgreSQL server).
PG_BASELINE_LABELS: Final = {
    "rest": "baseline: signed httpx2 POST + 2 PG commits",
    "ws-api": "baseline: signed ws-api order.place + 2 PG commits",
}
#: The baseline's venue request, as the "baseline parts" line names it.
REQUEST_LABELS: Final = {"rest": "POST", "ws-api": "order.place"}
#: How the transport's block of rows is headed in a report of several transports.
TRANSPORT_HEADINGS: Final = {
    "rest": "rest: orders over REST",
    "ws-api": "ws-api: orders over the WebSocket API",
}


def _transport(report: Mapping[str, Any]) -> str:
    """The order transport of one run (a report without the key is a REST run)."""
    return str(report.get("transport", "rest"))


def _backend(report: Mapping[str, Any]) -> str:
    """tradingd's store backend of one run (a report without the key ran on SQLite)."""
    return str(report.get("store", "sqlite"))


def _store_flag(report: Mapping[str, Any]) -> str:
    return " --store postgres" if _backend(report) == "postgres" else ""


def _machine(first: Mapping[str, Any], last: Mapping[str, Any]) -> list[str]:
    """The machine, and its load before the first run and after the last."""
    m, after = first["machine"], last["machine"]
    pg = [f"store: PostgreSQL {m['postgresql']} at {first['dsn']}"] if "dsn" in first else []
    return [
        f"machine: {m['usable_cores']} of {m['cores']} cores ({m['cpu_model']}), "
        f"{m['implementation']} {m['python']}, SQLite {m['sqlite']}, trio {m['trio']}, "
        f"httpx2 {m['httpx2']}, {m['platform']}",
        f"load average (1 min): {fmt(m['load_average_1m_before'], '.2f')} before, "
        f"{fmt(after['load_average_1m_after'], '.2f')} after (this includes the bench's own load); "
        f"CPU pressure (PSI some avg10) {fmt(m['cpu_pressure_avg10_before'], '.1f')}% before, "
        f"{fmt(after['cpu_pressure_avg10_after'], '.1f')}% after",
        *pg,
    ]


def _where(setup: Mapping[str, Any]) -> list[str]:
    return [f"  {key.replace('_', ' ')}: {text}" for key, text in setup.items()]


def _latency_heading(lat: Mapping[str, Any]) -> list[str]:
    return [
        f"1. latency, one order at a time: {lat['orders']} orders each "
        f"(after {lat['warmup']} warm-up), alternating blocks of {lat['block']}",
        f"   {'':<56}{'p50 ms':>9}{'p99 ms':>9}",
    ]


def _latency_rows(lat: Mapping[str, Any], transport: str, backend: str = "sqlite") -> list[str]:
    parts, store = lat["baseline_parts"], lat["tradingd_store"]
    labels = PG_BASELINE_LABELS if backend == "postgres" else BASELINE_LABELS

    def row(label: str, q: Mapping[str, Any]) -> str:
        return f"   {label:<56}{fmt(q['p50_ms']):>9}{fmt(q['p99_ms']):>9}"

    return [
        row(labels[transport], lat["baseline"]),
        row("tradingd: POST /orders received -> answer persisted", lat["tradingd"]),
        f"   {'ratio tradingd / baseline':<56}{fmt(lat['ratio_p50'], '.2f') + 'x':>9}"
        f"{fmt(lat['ratio_p99'], '.2f') + 'x':>9}   (target p50 <= {lat['target_ratio_p50']}x)",
        row(
            "tradingd: received -> intent committed (the 202)",
            lat["tradingd_received_to_committed"],
        ),
        row("client: POST /orders -> 202 (load generator)", lat["client_post_to_202"]),
        f"   baseline parts: 2 commits (thread calls) p50 "
        f"{fmt(parts['commits']['p50_ms'])} ms, {REQUEST_LABELS[transport]} p50 "
        f"{fmt(parts['post']['p50_ms'])} ms; "
        f"mean COMMIT statement {fmt(parts['mean_commit_ms'])} ms; CPU "
        f"{fmt(parts['cpu_ms_per_order'])} ms/order",
        f"   tradingd store per order: {store['writes_per_order']} write transactions, "
        f"{store['reads_per_order']} reads; mean COMMIT statement "
        f"{fmt(store['mean_commit_ms'])} ms; CPU {fmt(store['cpu_ms_per_order'])} ms/order",
    ]


def _sending(r: Mapping[str, Any], process: str) -> list[str]:
    cpu = r["cpu_share_while_accepting"]
    return [
        f"   group commits {r['commits']} (mean batch {fmt(r['mean_batch'], '.1f')}), "
        f"refused as saturated and retried {r['saturated']}",
        f"   sending meanwhile: {r['sent_while_accepting']} sent, "
        f"{r['answered_while_accepting']} answers persisted while accepting; all "
        f"{r['answered']} answered after {r['drained_after_s']:.2f} s = "
        f"{fmt(r['send_rate_per_s'], '.0f')}/s (rejected {r['rejected']}, "
        f"unknown {r['unknown']})",
        f"   CPU while accepting (cores busy): {process} "
        f"{fmt(cpu['tradingd_process'], '.2f')}, simulator {fmt(cpu['simulator'], '.2f')}",
    ]


def _entry_heading(ent: Mapping[str, Any]) -> str:
    return (
        f"2. durable intents accepted/s, {ent['submitters']} in-process submitters "
        f"(OrdersService.submit), {ent['orders']} orders, {ent['accounts']} account(s)"
    )


def _entry_rows(ent: Mapping[str, Any]) -> list[str]:
    return [
        f"   accepted {ent['accepted']} in {ent['seconds']:.3f} s = "
        f"{fmt(ent['accepted_per_s'], '.0f')}/s   (target >= {ent['target_per_s']:.0f}/s)",
        *_sending(ent, "tradingd process (submitters included)"),
    ]


def _http_heading(web: Mapping[str, Any]) -> str:
    return (
        f"3. durable intents accepted/s through POST /orders, {web['clients']} HTTP clients "
        f"in the load generator, {web['orders']} orders"
    )


def _http_rows(web: Mapping[str, Any]) -> list[str]:
    gen = web["load_generator_cpu"]
    return [
        f"   accepted {web['accepted']} in {web['client_wall_s']:.3f} s = "
        f"{fmt(web['accepted_per_s'], '.0f')}/s; client latency p50 "
        f"{fmt(web['client_latency']['p50_ms'])} ms, p99 "
        f"{fmt(web['client_latency']['p99_ms'])} ms",
        f"   load generator CPU: {gen['user_s']:.2f} s user + {gen['sys_s']:.2f} s sys over "
        f"{gen['wall_s']:.2f} s wall = {fmt(gen['share'], '.2f')} of a core",
        *_sending(web, "tradingd process"),
    ]


def _ws_api_client(run: Mapping[str, Any]) -> list[str]:
    """tradingd's WebSocket API client over a ws-api run (nothing for a REST run)."""
    c = run.get("ws_api_client")
    if c is None:
        return []
    return [
        f"   tradingd's WebSocket API client over the run: {c['connections']} connection(s), "
        f"{c['requests']} requests, {c['answers']} answers, {c['timeouts']} timed out, "
        f"{c['lost_in_flight']} lost in flight"
    ]


def render(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (``--json`` prints it as JSON instead)."""
    if "runs" in report:
        return _render_runs(report)
    transport = _transport(report)
    lat, ent, web = report["latency"], report["entry_in_process"], report["entry_http"]
    lines = [
        "tradingd bench orders"
        + ("" if transport == "rest" else f" --transport {transport}")
        + _store_flag(report),
        *_machine(report, report),
        "where:",
        *_where(report["setup"]),
        "",
        *_latency_heading(lat),
        *_latency_rows(lat, transport, _backend(report)),
        *_ws_api_client(report),
        "",
        _entry_heading(ent),
        *_entry_rows(ent),
        "",
        _http_heading(web),
        *_http_rows(web),
        "",
        *_profile(report),
        f"bench time {report['bench_seconds']:.1f} s",
    ]
    return "\n".join(lines)


def _profile(run: Mapping[str, Any], heading: str = "") -> list[str]:
    """The ``--profile`` block of one run (nothing without ``--profile``)."""
    profile = run.get("profile")
    if profile is None:
        return []
    return [*([f"   {heading}"] if heading else []), *render_profile(profile), ""]


def _summary(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per transport: the latencies, the ratios, the rates of 2. and 3."""
    head = (
        f"   {'transport':<10}{'baseline p50/p99 ms':>22}{'tradingd p50/p99 ms':>22}"
        f"{'ratio p50/p99':>16}{'accepted/s 2.':>15}{'sent/s 2.':>11}{'accepted/s 3.':>15}"
    )
    lines = [
        "summary (each transport its own run, one after the other; 2. and 3. below: accepted = "
        "durable intents, sent = venue answers persisted until the backlog was gone)",
        head,
    ]
    for transport, run in runs.items():
        lat, ent, web = run["latency"], run["entry_in_process"], run["entry_http"]
        base, td = lat["baseline"], lat["tradingd"]
        lines.append(
            f"   {transport:<10}"
            f"{fmt(base['p50_ms']) + ' / ' + fmt(base['p99_ms']):>22}"
            f"{fmt(td['p50_ms']) + ' / ' + fmt(td['p99_ms']):>22}"
            f"{fmt(lat['ratio_p50'], '.2f') + 'x / ' + fmt(lat['ratio_p99'], '.2f') + 'x':>16}"
            f"{fmt(ent['accepted_per_s'], '.0f'):>15}{fmt(ent['send_rate_per_s'], '.0f'):>11}"
            f"{fmt(web['accepted_per_s'], '.0f'):>15}"
        )
    return lines


def _render_runs(report: Mapping[str, Any]) -> str:
    """Several transports in one table: per measurement, a block of rows per transport."""
    runs: Mapping[str, Mapping[str, Any]] = report["runs"]
    ordered = list(runs.values())
    first = ordered[0]
    lines = [
        "tradingd bench orders --transport " + " + ".join(runs) + _store_flag(report),
        *_machine(first, ordered[-1]),
    ]
    for transport, run in runs.items():
        lines += [f"where ({transport} run):", *_where(run["setup"])]
    lines += ["", *_summary(runs), "", *_latency_heading(first["latency"])]
    for transport, run in runs.items():
        lines += [
            f"   {TRANSPORT_HEADINGS[transport]}",
            *_latency_rows(run["latency"], transport, _backend(run)),
            *_ws_api_client(run),
        ]
    lines += ["", _entry_heading(first["entry_in_process"])]
    for transport, run in runs.items():
        lines += [f"   {TRANSPORT_HEADINGS[transport]}", *_entry_rows(run["entry_in_process"])]
    lines += ["", _http_heading(first["entry_http"])]
    for transport, run in runs.items():
        lines += [f"   {TRANSPORT_HEADINGS[transport]}", *_http_rows(run["entry_http"])]
    lines.append("")
    for transport, run in runs.items():
        lines += _profile(run, TRANSPORT_HEADINGS[transport])
    lines += [
        "bench time "
        + ", ".join(f"{t} {run['bench_seconds']:.1f} s" for t, run in runs.items())
        + f"; {report['bench_seconds']:.1f} s in all",
    ]
    return "\n".join(lines)
