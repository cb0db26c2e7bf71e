"""The intake's counters, its ``/status/full`` part and its ``tradingd_intake_*`` metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from daemon.metrics import MetricFamily
from daemon.secrets import redact_url

if TYPE_CHECKING:
    from daemon.intake.service import IntakeService

__all__ = ["IntakeStats", "intake_metrics", "intake_status"]


@attrs.define
class IntakeStats:
    """Counters of one intake, across its incarnations.

    ``created`` + ``duplicates`` are the entries processed (acknowledged after
    their intent was committed); ``recovered`` counts entries re-read from this
    consumer's pending list, ``claimed`` those taken over from other consumers.
    """

    read: int = 0
    created: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    recovered: int = 0
    claimed: int = 0
    claim_deleted: int = 0
    connects: int = 0
    redis_errors: int = 0

    @property
    def processed(self) -> int:
        return self.created + self.duplicates


def intake_status(intake: IntakeService) -> dict[str, Any]:
    """What ``/status/full`` and ``tradingd status`` show under ``intake``."""
    s = intake.settings
    return {
        "running": intake.running,
        "connected": intake.connected,
        "redis": redact_url(s.redis_url),
        "stream": s.stream,
        "group": s.group,
        "consumer": intake.consumer,
        "dead_letter_stream": s.dead_letter_stream,
        "pending": intake.pending_total,
        "pending_mine": intake.pending_mine,
        "held": intake.batches.held,
        "processed": intake.stats.processed,
        **attrs.asdict(intake.stats),
        "last_error": intake.last_error,
        "last_error_at": intake.last_error_at,
        "lane": intake.lane.snapshot(),
    }


def intake_metrics(intake: IntakeService) -> list[MetricFamily]:
    """The intake's ``/metrics`` families, read at scrape time."""
    st = intake.stats
    return [
        MetricFamily.counter(
            "tradingd_intake_entries",
            "Stream entries settled, by outcome (created and duplicate are acknowledged "
            "after their intent committed).",
            [
                ((("outcome", "created"),), st.created),
                ((("outcome", "duplicate"),), st.duplicates),
                ((("outcome", "dead_lettered"),), st.dead_lettered),
            ],
        ),
        MetricFamily.counter(
            "tradingd_intake_retries",
            "Submissions refused for now (503) and kept pending.",
            [((), st.retries)],
        ),
        MetricFamily.counter(
            "tradingd_intake_claimed",
            "Entries taken over from other consumers by the claim sweep.",
            [((), st.claimed)],
        ),
        MetricFamily.counter(
            "tradingd_intake_redis_errors",
            "Failed Redis calls (each one retried with backoff).",
            [((), st.redis_errors)],
        ),
        MetricFamily.gauge(
            "tradingd_intake_connected",
            "1 while the intake is connected to Redis.",
            [((), 1.0 if intake.connected else 0.0)],
        ),
        MetricFamily.gauge(
            "tradingd_intake_pending",
            "Entries pending in the consumer group (at the last sweep).",
            [((), float(intake.pending_total or 0))],
        ),
        MetricFamily.gauge(
            "tradingd_intake_held",
            "Entries held in memory for a retry of their submission.",
            [((), float(intake.batches.held))],
        ),
    ]
