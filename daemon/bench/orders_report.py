"""The report of ``tradingd bench orders`` as a plain-text table.

:func:`render` takes the report :func:`daemon.bench.orders.measure` returns
(the same document ``--json`` prints) and lays out the machine, where each
part ran and the three measurements with their targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.bench.common import fmt

__all__ = ["render"]


def render(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (``--json`` prints it as JSON instead)."""
    m, s = report["machine"], report["setup"]
    lat, ent, web = report["latency"], report["entry_in_process"], report["entry_http"]
    parts, store = lat["baseline_parts"], lat["tradingd_store"]
    lines = [
        "tradingd bench orders",
        f"machine: {m['usable_cores']} of {m['cores']} cores ({m['cpu_model']}), "
        f"{m['implementation']} {m['python']}, SQLite {m['sqlite']}, trio {m['trio']}, "
        f"httpx2 {m['httpx2']}, {m['platform']}",
        f"load average (1 min): {fmt(m['load_average_1m_before'], '.2f')} before, "
        f"{fmt(m['load_average_1m_after'], '.2f')} after (this includes the bench's own load); "
        f"CPU pressure (PSI some avg10) {fmt(m['cpu_pressure_avg10_before'], '.1f')}% before, "
        f"{fmt(m['cpu_pressure_avg10_after'], '.1f')}% after",
        "where:",
        *(f"  {key.replace('_', ' ')}: {text}" for key, text in s.items()),
        "",
        f"1. latency, one order at a time: {lat['orders']} orders each "
        f"(after {lat['warmup']} warm-up), alternating blocks of {lat['block']}",
        f"   {'':<56}{'p50 ms':>9}{'p99 ms':>9}",
    ]

    def row(label: str, q: Mapping[str, Any]) -> str:
        return f"   {label:<56}{fmt(q['p50_ms']):>9}{fmt(q['p99_ms']):>9}"

    lines += [
        row("baseline: signed httpx2 POST + 2 FULL commits", lat["baseline"]),
        row("tradingd: POST /orders received -> answer persisted", lat["tradingd"]),
        f"   {'ratio tradingd / baseline':<56}{fmt(lat['ratio_p50'], '.2f') + 'x':>9}"
        f"{fmt(lat['ratio_p99'], '.2f') + 'x':>9}   (target p50 <= {lat['target_ratio_p50']}x)",
        row(
            "tradingd: received -> intent committed (the 202)",
            lat["tradingd_received_to_committed"],
        ),
        row("client: POST /orders -> 202 (load generator)", lat["client_post_to_202"]),
        f"   baseline parts: 2 commits (thread calls) p50 "
        f"{fmt(parts['commits']['p50_ms'])} ms, POST p50 {fmt(parts['post']['p50_ms'])} ms; "
        f"mean COMMIT statement {fmt(parts['mean_commit_ms'])} ms; CPU "
        f"{fmt(parts['cpu_ms_per_order'])} ms/order",
        f"   tradingd store per order: {store['writes_per_order']} write transactions, "
        f"{store['reads_per_order']} reads; mean COMMIT statement "
        f"{fmt(store['mean_commit_ms'])} ms; CPU {fmt(store['cpu_ms_per_order'])} ms/order",
        "",
        f"2. durable intents accepted/s, {ent['submitters']} in-process submitters "
        f"(OrdersService.submit), {ent['orders']} orders, {ent['accounts']} account(s)",
        f"   accepted {ent['accepted']} in {ent['seconds']:.3f} s = "
        f"{fmt(ent['accepted_per_s'], '.0f')}/s   (target >= {ent['target_per_s']:.0f}/s)",
    ]

    def common(r: Mapping[str, Any], process: str) -> list[str]:
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

    lines += common(ent, "tradingd process (submitters included)")
    gen = web["load_generator_cpu"]
    lines += [
        "",
        f"3. durable intents accepted/s through POST /orders, {web['clients']} HTTP clients "
        f"in the load generator, {web['orders']} orders",
        f"   accepted {web['accepted']} in {web['client_wall_s']:.3f} s = "
        f"{fmt(web['accepted_per_s'], '.0f')}/s; client latency p50 "
        f"{fmt(web['client_latency']['p50_ms'])} ms, p99 "
        f"{fmt(web['client_latency']['p99_ms'])} ms",
        f"   load generator CPU: {gen['user_s']:.2f} s user + {gen['sys_s']:.2f} s sys over "
        f"{gen['wall_s']:.2f} s wall = {fmt(gen['share'], '.2f')} of a core",
        *common(web, "tradingd process"),
        "",
        f"bench time {report['bench_seconds']:.1f} s",
    ]
    return "\n".join(lines)
