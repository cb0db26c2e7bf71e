"""Order intents from other processes through a Redis stream (``[intake]``).

Producers ``XADD`` an entry with one field, ``intent``: the JSON body of
``POST /orders``, ``message_id`` included. The daemon reads the stream in a
consumer group and submits each intent through the same entry path as
``POST /orders``; it acknowledges an entry only once its intent is committed.

* :mod:`~daemon.intake.entries`: raw replies parsed, entries decoded
  (hostile input), outcomes judged, dead letters built — no I/O;
* :mod:`~daemon.intake.redis_stream`: :class:`RedisStreamLog`, redis-py's
  sync client on the intake's own thread lane (why: see there);
* :mod:`~daemon.intake.service`: :class:`IntakeService`, the supervised
  child — the ack boundary, redelivery, the claim sweep, Redis failures;
* :mod:`~daemon.intake.batch`: :class:`~daemon.intake.batch.BatchSubmitter`,
  one batch submitted in stream order, settled, its transient refusals held;
* :mod:`~daemon.intake.report`: counters, status and metrics.
"""

from daemon.intake.service import IntakeService, default_consumer

__all__ = ["IntakeService", "default_consumer"]
