"""The order pipeline's tunables, as one value (built from ``[orders]``).

Kept apart from :mod:`daemon.config` so the pipeline and its tests can be
built without a whole configuration; :meth:`OrdersSettings.from_config`
reads the ``[orders]`` section.
"""

from __future__ import annotations

from typing import Any

import attrs

from daemon.orders.dispatch import DispatchMode
from daemon.orders.ids import DEFAULT_PREFIX

__all__ = ["OrdersSettings"]


@attrs.frozen(kw_only=True)
class OrdersSettings:
    """See ``config/tradingd.toml`` (``[orders]``) for what each one means."""

    dispatch: DispatchMode = DispatchMode.SHARDED
    shards: int = 4
    max_account_queues: int = 64
    account_queue_capacity: int = 1000
    idle_queue_s: float = 60.0
    entry_queue_capacity: int = 4096
    group_commit_max: int = 512
    send_timeout_s: float = 5.0
    answer_hold_ms: float = 2.0
    section_deadline_s: float = 10.0
    drain_timeout_s: float = 10.0
    clock_skew_s: float = 1.0
    query_lag_s: float = 2.0
    unknown_retry_s: float = 1.0
    reconcile_interval_s: float = 30.0
    reconcile_concurrency: int = 4
    startup_reconcile_timeout_s: float = 45.0
    poll_interval_s: float = 2.0
    id_prefix: str = DEFAULT_PREFIX

    def __attrs_post_init__(self) -> None:
        if self.section_deadline_s <= self.send_timeout_s:
            raise ValueError(
                f"section_deadline_s ({self.section_deadline_s}) must be > send_timeout_s "
                f"({self.send_timeout_s}): the section also persists the answer"
            )

    def visibility_grace_s(self, recv_window_ms: int) -> float:
        """How long after a SENDING mark a venue "no such order" still proves nothing.

        The mark is written before the request is signed; the request can be
        processed as late as the section's deadline plus the venue's
        ``recvWindow`` (it refuses older requests) plus clock skew, and a
        new order may take ``query_lag_s`` to become visible to queries.
        """
        return (
            self.section_deadline_s + recv_window_ms / 1000 + self.clock_skew_s + self.query_lag_s
        )

    @classmethod
    def from_config(cls, section: Any) -> OrdersSettings:
        """From the ``[orders]`` section (``daemon.config.OrdersConfig``)."""
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if hasattr(section, field.name):
                values[field.name] = getattr(section, field.name)
        if "dispatch" in values:
            values["dispatch"] = DispatchMode(values["dispatch"])
        return cls(**values)
