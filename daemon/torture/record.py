"""What a torture run keeps: each fault applied, each restart, each scenario's verdict.

Everything here is plain data that round-trips through JSON (``--json``), so
that a report (``--report``) can be written from one run and a failing
scenario read again later.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Event", "Restart", "ScenarioResult", "Violation"]


@attrs.define
class Event:
    """One fault the runner applied."""

    index: int
    kind: str
    #: Seconds from the scenario's start.
    at_s: float
    #: How it went: what was armed, how long a freeze or an outage lasted, whether
    #: a targeted kill found its moment ("aimed") or gave up waiting ("timed out").
    detail: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class Restart:
    """One start of the daemon after the first."""

    #: Why: the fault kind that stopped it ("kill-random", "term-drain", ...).
    cause: str
    #: Seconds from the process start to ``READY=1`` (start-up reconciliation included).
    ready_s: float


@attrs.frozen
class Violation:
    """A broken invariant: which, and the evidence."""

    invariant: str
    detail: str


@attrs.define
class ScenarioResult:
    """One scenario from start to verdict."""

    seed: int
    index: int
    #: "faults" (the random schedule) or "negative-control".
    kind: str
    elapsed_s: float = 0.0
    events: list[Event] = attrs.Factory(list)
    restarts: list[Restart] = attrs.Factory(list)
    #: SIGKILLs of the daemon by the runner (faults and the watchdog's stand-in).
    kills: int = 0
    sim_restarts: int = 0
    #: Counts from the witnesses: intents, accepted, venue orders, fills, trades, ...
    counts: dict[str, int] = attrs.Factory(dict)
    #: (seconds in UNKNOWN, how it ended) of every UNKNOWN outcome, from the history.
    unknowns: list[tuple[float, str]] = attrs.Factory(list)
    #: Trade-id ranges the daemon recorded as gaps, by state.
    gaps: dict[str, int] = attrs.Factory(dict)
    violations: list[Violation] = attrs.Factory(list)
    #: A failure of the run itself (a program would not start, a wait timed out).
    error: str | None = None
    #: Where the logs and the store of this scenario are kept.
    workdir: str = ""

    @property
    def ok(self) -> bool:
        """Invariants held (for the negative control: its duplicate was seen)."""
        if self.kind == "negative-control":
            return self.error is None and any(
                v.invariant == "exactly-once" for v in self.violations
            )
        return self.error is None and not self.violations

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        return cls(
            seed=int(data["seed"]),
            index=int(data["index"]),
            kind=str(data["kind"]),
            elapsed_s=float(data["elapsed_s"]),
            events=[Event(**e) for e in data["events"]],
            restarts=[Restart(**r) for r in data["restarts"]],
            kills=int(data["kills"]),
            sim_restarts=int(data["sim_restarts"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            unknowns=[(float(s), str(how)) for s, how in data["unknowns"]],
            gaps={str(k): int(v) for k, v in data["gaps"].items()},
            violations=[Violation(**v) for v in data["violations"]],
            error=data.get("error"),
            workdir=str(data.get("workdir", "")),
        )
