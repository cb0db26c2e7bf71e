"""The order pipeline's ``/metrics`` families, read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.metrics import MetricFamily

if TYPE_CHECKING:
    from daemon.orders.ledger import LatencyLog, OrderLedger
    from daemon.orders.service import Pipeline

__all__ = ["pipeline_metrics"]


def pipeline_metrics(pipeline: Pipeline | None) -> list[MetricFamily]:
    """The order pipeline's ``/metrics`` families (none while it is not running)."""
    if pipeline is None:
        return []
    e = pipeline.entry.stats
    led = pipeline.ledger
    ex = pipeline.executor
    streams = pipeline.streams
    return [
        MetricFamily.counter(
            "tradingd_orders_submissions",
            "Order submissions by outcome at entry.",
            [
                ((("outcome", "created"),), e.created),
                ((("outcome", "duplicate"),), e.duplicates),
                ((("outcome", "invalid"),), e.invalid),
                ((("outcome", "risk_rejected"),), e.risk_rejected),
                ((("outcome", "saturated"),), e.saturated),
                ((("outcome", "conflict"),), e.conflicts),
            ],
        ),
        MetricFamily.counter(
            "tradingd_orders_commits", "Group commits of intents.", [((), e.commits)]
        ),
        MetricFamily.counter("tradingd_orders_sent", "New-order requests sent.", [((), ex.sent)]),
        MetricFamily.counter(
            "tradingd_orders_unknown", "Sends whose outcome was UNKNOWN.", [((), led.unknown)]
        ),
        MetricFamily.counter(
            "tradingd_orders_resends",
            "Resends after the venue proved absence.",
            [((), led.resends)],
        ),
        MetricFamily.counter(
            "tradingd_orders_rejected", "Orders the venue rejected.", [((), led.rejected)]
        ),
        MetricFamily.gauge(
            "tradingd_orders_live",
            "Non-terminal orders by state.",
            [((("state", k),), v) for k, v in sorted(led.counts().items())],
        ),
        MetricFamily.gauge(
            "tradingd_orders_latency_seconds",
            "Order latency over the last 100,000 orders, by stage and quantile: received -> "
            "intent durable (the 202), received -> the venue's answer persisted.",
            _latency_samples(led),
        ),
        MetricFamily.counter(
            "tradingd_orders_latency_observed",
            "Order latencies recorded, by stage.",
            [((("stage", stage),), log.count) for stage, log in _stages(led)],
        ),
        MetricFamily.gauge(
            "tradingd_orders_unknown_venue_orders",
            "Open venue orders the store does not know.",
            [((), len(pipeline.reconciler.unknown_venue_orders))],
        ),
        MetricFamily.gauge(
            "tradingd_orders_user_stream_subscribed",
            "1 while the venue's user data stream is subscribed (the fill source), else 0.",
            [((("venue", v),), int(w.up)) for v, w in sorted(streams.witnesses.items())],
        ),
        MetricFamily.counter(
            "tradingd_orders_user_stream_events",
            "User data stream events received, by venue.",
            [((("venue", v),), a.counts.events) for v, a in sorted(streams.appliers.items())],
        ),
        MetricFamily.counter(
            "tradingd_orders_resends_held",
            "Resends held longer because the user data stream was down in the order's window.",
            [((("venue", v),), w.held_total) for v, w in sorted(streams.witnesses.items())],
        ),
    ]


#: The quantiles of ``tradingd_orders_latency_seconds``.
LATENCY_QUANTILES = (0.5, 0.9, 0.99, 1.0)


def _stages(ledger: OrderLedger) -> list[tuple[str, LatencyLog]]:
    return [
        ("received_to_committed", ledger.commit_latency),
        ("received_to_answer_persisted", ledger.answer_latency),
    ]


def _latency_samples(ledger: OrderLedger) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    samples: list[tuple[tuple[tuple[str, str], ...], float]] = []
    for stage, log in _stages(ledger):
        for q, value in zip(LATENCY_QUANTILES, log.quantiles(LATENCY_QUANTILES), strict=False):
            samples.append(((("stage", stage), ("quantile", f"{q:g}")), value))
    return samples
