"""The order pipeline's ``/metrics`` families, read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.metrics import MetricFamily

if TYPE_CHECKING:
    from daemon.orders.service import Pipeline

__all__ = ["pipeline_metrics"]


def pipeline_metrics(pipeline: Pipeline | None) -> list[MetricFamily]:
    """The order pipeline's ``/metrics`` families (none while it is not running)."""
    if pipeline is None:
        return []
    e = pipeline.entry.stats
    led = pipeline.ledger
    ex = pipeline.executor
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
        MetricFamily.counter(
            "tradingd_orders_sent", "New-order requests sent.", [((), ex.sent)]
        ),
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
            "tradingd_orders_unknown_venue_orders",
            "Open venue orders the store does not know.",
            [((), len(pipeline.reconciler.unknown_venue_orders))],
        ),
    ]
