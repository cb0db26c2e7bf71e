"""Request weights that are a rule rather than a constant, in one place.

Binance documents the weight of ``GET /api/v3/depth`` as a function of its
``limit``. The client's request builder
(:func:`daemon.venues.binance.codec.requests.depth_request`) and the
simulator's rate limits (:mod:`daemon.venues.sim.protocol`) both take it from here. It
is a figure of the docs, like the rate-limit rules in :mod:`.instruments`, not
a reading of the wire rules, so sharing it leaves the simulator an
independent check of the client's protocol code.
"""

from __future__ import annotations

__all__ = ["depth_weight"]


def depth_weight(limit: int) -> int:
    """Documented weight of ``GET /api/v3/depth`` by ``limit``: 5, 25, 50 or 250.

    1-100 levels weigh 5, 101-500 weigh 25, 501-1000 weigh 50, more weigh 250.
    """
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250
