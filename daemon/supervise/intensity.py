"""Restart intensity and backoff.

:class:`RestartIntensity` keeps one supervisor's window of restart failures
(more than ``max_restarts`` within ``period_s`` escalates) and each child's
own restart times, from which :func:`backoff_delay_s` computes the delay
before its next start.
"""

from __future__ import annotations

import collections
import random

from daemon.errors import ChildFailure
from daemon.supervise.policy import SupervisorPolicy

__all__ = ["RestartIntensity", "backoff_delay_s"]


def backoff_delay_s(policy: SupervisorPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before restart number ``attempt`` (1-based) of a child.

    Exponential so that a crash loop does not burn CPU or hammer a peer, with
    jitter so that children failing together (a venue outage) do not come back
    in lock-step. The rng is only consulted when ``backoff_jitter > 0``, which
    keeps jitter-free tests independent of the rng.

    ``min(max, initial * multiplier**(attempt-1) * (1 + u))`` with
    ``u = rng.uniform(-jitter, jitter)``.
    """
    exponent = max(attempt - 1, 0)
    # Cap before multiplying out so a long crash loop cannot overflow the float.
    base = policy.backoff_initial_s
    for _ in range(exponent):
        base *= policy.backoff_multiplier
        if base >= policy.backoff_max_s:
            base = policy.backoff_max_s
            break
    if policy.backoff_jitter > 0:
        base *= 1.0 + rng.uniform(-policy.backoff_jitter, policy.backoff_jitter)
    return max(0.0, min(policy.backoff_max_s, base))


class RestartIntensity:
    """The restart accounting of one supervisor: its failure window and the backoffs.

    Args:
        policy: ``max_restarts``, ``period_s`` and the backoff parameters.
        rng: source of backoff jitter.
    """

    def __init__(self, policy: SupervisorPolicy, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self._window: collections.deque[ChildFailure] = collections.deque()

    def record(self, failure: ChildFailure) -> bool:
        """Count a restart failure at ``failure.at``; True when that exceeds the intensity."""
        self._window.append(failure)
        while self._window and self._window[0].at <= failure.at - self.policy.period_s:
            self._window.popleft()
        return len(self._window) > self.policy.max_restarts

    def failures(self) -> tuple[ChildFailure, ...]:
        """The failures of the current window, oldest first (what an escalation carries)."""
        return tuple(self._window)

    def in_period(self, now: float | None) -> int:
        """The failures within ``period_s`` before ``now`` (all recorded ones if None)."""
        if now is None:
            return len(self._window)
        return sum(1 for f in self._window if f.at > now - self.policy.period_s)

    def clear(self) -> None:
        """Forget the window (a new run of the supervisor)."""
        self._window.clear()

    def backoff_s(self, restart_times: collections.deque[float], now: float) -> float:
        """Record a restart of a child at ``now`` in its ``restart_times``; its delay.

        The attempt number is the child's own restarts within ``period_s``.
        """
        restart_times.append(now)
        while restart_times and restart_times[0] <= now - self.policy.period_s:
            restart_times.popleft()
        return backoff_delay_s(self.policy, len(restart_times), self._rng)
