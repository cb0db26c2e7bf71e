"""Fault injection: the failures a real venue produces, on demand and reproducibly.

A client is only as good as its behaviour on the bad days, and the bad days of
an exchange are rare, so the simulator makes them on purpose. Every fault is a
:class:`FaultSpec` (a frozen value, loadable from the sim config file, the
``--fault`` flag or ``POST /sim/faults``), armed in a :class:`FaultInjector`
which keeps its mutable state (remaining count, messages seen).

REST faults (``method``/``path`` select the requests; ``count`` bounds how many
are hit; ``probability`` thins them):

=================== ================================================================
``rest_error``      answer ``status`` (default 503) with ``code``/``msg`` or a raw
                    ``body``, ``phase="before"`` (not processed) or ``"after"``
                    (processed: e.g. the order exists, the client sees a 5xx)
``rest_timeout``    stall ``delay_s`` so the client times out; ``before``: then
                    answer 504 unprocessed; ``after``: processed, then the real answer
``rest_unknown``    processed, then ``-1007`` "Timeout waiting for response from
                    backend server…" (HTTP ``status``, default 408)
``rate_limit_burst`` answer 429 ``-1003`` with ``Retry-After: retry_after_s``; the
                    caller is then rate limited for that long (ban if it insists)
``order_invisible`` orders created while armed stay invisible to queries
                    (``GET /api/v3/order``, ``openOrders``, ``myTrades``) for ``delay_s``
=================== ================================================================

Stream faults (``stream`` selects connections subscribed to that stream):

=================== ================================================================
``ws_drop``         drop the connection every ``every_s`` seconds after it opened (or
                    after the fault was armed), or with ``probability`` per message;
                    ``mode="abort"`` (TCP reset, default) or ``"close"`` (close frame)
``ws_malformed``    send a malformed frame with ``probability`` per message or every
                    ``every_n`` messages; ``replace=true`` sends it *instead* of the message;
                    ``variant`` picks the frame (see below, default ``truncated``)
``ws_delay``        hold every message ``delay_s`` before sending it (order kept)
``ws_stall``        go silent (messages discarded, pings still answered) for
                    ``duration_s`` (forever when unset)
``ws_shutdown``     send ``serverShutdown`` every ``every_s`` seconds after a connection
                    opened, then close it ``grace_s`` later
=================== ================================================================

``ws_malformed`` variants (a hostile venue, not only a broken one):

=================== ================================================================
``truncated``       the first half of the real message (the default)
``deep``            a JSON array nested 100,000 levels deep (``[[[…]]]``, 200 KB)
``huge_int``        a trade whose ids, prices and times are 5,000-digit integers
                    (beyond Python's int-string limit)
``big_int``         a well-formed trade whose id and times are 4,000-digit integers
                    (parseable, but no 64-bit id)
``huge_exponent``   a well-formed trade with price ``1e999999`` and quantity ``1e-999999``
``nested``          a well-formed trade with objects and lists in every field
``binary``          a *binary* frame that is not UTF-8 (``FF FE 00`` + the message)
``nan``             a trade with ``NaN`` and ``Infinity`` numbers
=================== ================================================================

WebSocket API faults (``/ws-api/v3``; ``method`` selects the requests by their
WebSocket API method, e.g. ``order.place``; ``count`` and ``probability`` as above):

======================== ===========================================================
``wsapi_drop``           end the connection: per request (``phase="before"``: not
                         processed; ``"after"``: processed, no answer), or every
                         ``every_s`` seconds after it opened (or after arming);
                         ``mode="abort"`` (TCP reset, default) or ``"close"``
``wsapi_delay``          hold the answer ``delay_s`` (other answers overtake it)
``wsapi_no_answer``      never answer: ``phase="before"`` not processed, ``"after"``
                         processed (the ambiguous case: the order may exist)
``wsapi_error``          answer ``status`` (default 503) with ``code``/``msg``,
                         ``phase="before"`` (not processed) or ``"after"`` (processed)
``userstream_stall``     hold every user data stream event while armed (``duration_s``,
                         forever when unset), then deliver them in order
``userstream_terminate`` send ``eventStreamTerminated`` and end the subscription:
                         every ``every_s`` seconds after it started (or after arming),
                         or at its next event (that event and any queued are lost)
======================== ===========================================================

``order_invisible`` applies to the WebSocket API's ``order.status``,
``openOrders.status`` and ``myTrades`` as to REST (it hides orders, whatever
the transport that placed or queries them).

``duration_s`` on any fault disarms it that long after it was armed.
Randomness comes from one seeded :class:`random.Random`, so a run is repeatable.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypeVar, get_args

import attrs

from daemon.decode import json_loads

__all__ = [
    "FAULT_KINDS",
    "MALFORMED_VARIANTS",
    "ArmedFault",
    "FaultInjector",
    "FaultSpec",
    "StreamVerdict",
    "hostile_frame",
    "parse_fault_flag",
]

FaultKind = Literal[
    "rest_error",
    "rest_timeout",
    "rest_unknown",
    "rate_limit_burst",
    "order_invisible",
    "ws_drop",
    "ws_malformed",
    "ws_delay",
    "ws_stall",
    "ws_shutdown",
    "wsapi_drop",
    "wsapi_delay",
    "wsapi_no_answer",
    "wsapi_error",
    "userstream_stall",
    "userstream_terminate",
]
FAULT_KINDS: Final[tuple[str, ...]] = get_args(FaultKind)
REST_KINDS: Final = frozenset(
    {"rest_error", "rest_timeout", "rest_unknown", "rate_limit_burst", "order_invisible"}
)
STREAM_KINDS: Final = frozenset({"ws_drop", "ws_malformed", "ws_delay", "ws_stall", "ws_shutdown"})
WSAPI_KINDS: Final = frozenset({"wsapi_drop", "wsapi_delay", "wsapi_no_answer", "wsapi_error"})
USERSTREAM_KINDS: Final = frozenset({"userstream_stall", "userstream_terminate"})

Phase = Literal["before", "after"]
DropMode = Literal["abort", "close"]
MalformedVariant = Literal[
    "truncated", "deep", "huge_int", "big_int", "huge_exponent", "nested", "binary", "nan"
]
MALFORMED_VARIANTS: Final[tuple[str, ...]] = get_args(MalformedVariant)
#: Nesting depth of the ``deep`` variant.
DEEP_FRAME_LEVELS: Final = 100_000

T = TypeVar("T")


def _opt(default: T, help_text: str) -> T:
    """A :class:`FaultSpec` field: its default and one line of help."""
    return attrs.field(default=default, metadata={"help": help_text})


def _positive_or_none(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value}")


@attrs.frozen
class FaultSpec:
    """One fault, as written in the config file, a ``--fault`` flag or ``POST /sim/faults``.

    Only the fields that make sense for ``kind`` may be set; the rest must keep
    their defaults (a typo'd combination is an error, not a silent no-op).
    """

    kind: FaultKind = attrs.field(metadata={"help": "what to break, see the module docstring"})
    method: str | None = _opt(
        None, "REST: only this HTTP method (e.g. POST); wsapi_*: this method (order.place)"
    )
    path: str | None = _opt(None, "REST: only this path (e.g. /api/v3/order)")
    stream: str | None = _opt(None, "streams: only connections subscribed to this stream")
    phase: Phase = _opt("before", "REST: 'before' or 'after' processing")
    count: int | None = _opt(None, "hit at most this many requests/messages (unset: no limit)")
    probability: float = _opt(1.0, "chance that a matching request/message is hit")
    every_n: int | None = _opt(None, "ws_malformed: every N-th message")
    every_s: float | None = _opt(
        None, "ws_drop/ws_shutdown/wsapi_drop/userstream_terminate: seconds after connect"
    )
    delay_s: float | None = _opt(None, "rest_timeout/ws_delay/order_invisible: seconds")
    duration_s: float | None = _opt(None, "disarm this long after arming (ws_stall: stall length)")
    status: int | None = _opt(None, "rest_error/rest_unknown: HTTP status to answer")
    code: int | None = _opt(None, "rest_error: Binance error code in the JSON body")
    msg: str | None = _opt(None, "rest_error: message in the JSON body")
    body: str | None = _opt(None, "rest_error: raw body instead of JSON (e.g. HTML)")
    retry_after_s: int | None = _opt(None, "rate_limit_burst: Retry-After seconds")
    mode: DropMode = _opt("abort", "ws_drop: 'abort' (TCP reset) or 'close' (close frame)")
    replace: bool = _opt(False, "ws_malformed: send the garbage instead of the message")
    grace_s: float = _opt(0.0, "ws_shutdown: seconds between the event and the close")
    variant: MalformedVariant = _opt(
        "truncated", "ws_malformed: which hostile frame ('truncated', 'deep', ...)"
    )

    def __attrs_post_init__(self) -> None:
        kind = self.kind
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], got {self.probability}")
        if self.every_n is not None and self.every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {self.every_n}")
        for name in ("every_s", "delay_s", "duration_s"):
            _positive_or_none(name, getattr(self, name))
        if self.grace_s < 0 or not math.isfinite(self.grace_s):
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx HTTP status, got {self.status}")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        if self.kind in WSAPI_KINDS:
            if self.method is not None and not self.method:
                raise ValueError("method must not be empty")
        elif self.method is not None and self.method != self.method.upper():
            raise ValueError(f"method must be upper case, got {self.method!r}")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")
        if self.variant not in MALFORMED_VARIANTS:
            raise ValueError(
                f"unknown ws_malformed variant {self.variant!r}; "
                f"expected one of {', '.join(MALFORMED_VARIANTS)}"
            )
        self._check_fields_for_kind()

    def _check_fields_for_kind(self) -> None:
        allowed = _ALLOWED[self.kind]
        defaults = {f.name: f.default for f in attrs.fields(FaultSpec)}
        wrong = [
            name
            for name, default in defaults.items()
            if name not in allowed and name != "kind" and getattr(self, name) != default
        ]
        if wrong:
            raise ValueError(f"{self.kind} does not take {', '.join(wrong)}")
        if self.kind == "ws_drop" and self.every_s is None and self.probability == 1.0:
            raise ValueError("ws_drop needs every_s or a probability below 1")
        if self.kind == "ws_malformed" and self.every_n is not None and self.probability != 1.0:
            raise ValueError("ws_malformed takes every_n or probability, not both")
        if self.kind == "ws_shutdown" and self.every_s is None:
            raise ValueError("ws_shutdown needs every_s")
        if self.kind == "wsapi_drop" and self.every_s is not None and self.method is not None:
            raise ValueError("wsapi_drop takes every_s or method, not both")
        if self.kind in ("rest_timeout", "ws_delay", "order_invisible", "wsapi_delay") and (
            self.delay_s is None
        ):
            raise ValueError(f"{self.kind} needs delay_s")
        if self.kind == "rest_unknown" and self.phase != "after":
            raise ValueError("rest_unknown is an answer after processing (phase 'after')")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultSpec:
        """Build from JSON/TOML-like data, strictly (unknown keys and wrong types are errors).

        Raises:
            ValueError: with a message naming the offending key.
        """
        fields = {f.name: f for f in attrs.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown fault key(s): {', '.join(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault needs a 'kind'")
        kwargs: dict[str, Any] = {}
        for name, raw in data.items():
            kwargs[name] = _coerce(name, raw)
        if kwargs["kind"] == "rest_unknown":
            # Only meaningful after processing (the order exists): the default.
            kwargs.setdefault("phase", "after")
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        """The non-default fields, JSON-able (what ``GET /sim/faults`` shows)."""
        defaults = {f.name: f.default for f in attrs.fields(FaultSpec)}
        return {
            name: value
            for name, value in attrs.asdict(self).items()
            if name == "kind" or value != defaults[name]
        }


_COMMON_REST = {"method", "path", "count", "probability", "duration_s"}
_COMMON_WS = {"stream", "count", "probability", "duration_s"}
_COMMON_WSAPI = {"method", "count", "probability", "duration_s"}
_ALLOWED: Final[dict[str, set[str]]] = {
    "rest_error": _COMMON_REST | {"phase", "status", "code", "msg", "body"},
    "rest_timeout": _COMMON_REST | {"phase", "delay_s"},
    "rest_unknown": _COMMON_REST | {"phase", "status"},
    "rate_limit_burst": _COMMON_REST | {"retry_after_s"},
    "order_invisible": {"count", "duration_s", "delay_s", "probability"},
    "ws_drop": _COMMON_WS | {"every_s", "mode"},
    "ws_malformed": _COMMON_WS | {"every_n", "replace", "variant"},
    "ws_delay": _COMMON_WS | {"delay_s"},
    "ws_stall": {"stream", "duration_s"},
    "ws_shutdown": {"stream", "every_s", "grace_s", "duration_s"},
    "wsapi_drop": _COMMON_WSAPI | {"phase", "every_s", "mode"},
    "wsapi_delay": _COMMON_WSAPI | {"delay_s"},
    "wsapi_no_answer": _COMMON_WSAPI | {"phase"},
    "wsapi_error": _COMMON_WSAPI | {"phase", "status", "code", "msg"},
    "userstream_stall": {"duration_s"},
    "userstream_terminate": {"every_s", "count", "probability", "duration_s"},
}

_INT_FIELDS: Final = frozenset({"count", "every_n", "status", "code", "retry_after_s"})
_FLOAT_FIELDS: Final = frozenset({"probability", "every_s", "delay_s", "duration_s", "grace_s"})
_BOOL_FIELDS: Final = frozenset({"replace"})


def _coerce(name: str, raw: Any) -> Any:
    """Type-check one field value from JSON/TOML (``5`` is fine for a float, ``"5"`` is not)."""
    if name in _INT_FIELDS:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"{name} must be an integer, got {raw!r}")
        return raw
    if name in _FLOAT_FIELDS:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"{name} must be a number, got {raw!r}")
        return float(raw)
    if name in _BOOL_FIELDS:
        if not isinstance(raw, bool):
            raise ValueError(f"{name} must be true or false, got {raw!r}")
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"{name} must be a string, got {raw!r}")
    return raw


def parse_fault_flag(text: str) -> FaultSpec:
    """Parse a ``--fault`` value: ``kind=rest_error,phase=after,path=/api/v3/order,count=2``.

    Values are typed by field (integers, numbers, ``true``/``false``, strings).
    A JSON object (``{"kind": ...}``) is accepted too.

    Raises:
        ValueError: with what is wrong.
    """
    text = text.strip()
    if text.startswith("{"):
        data = json_loads(text, what="JSON fault")
        if not isinstance(data, dict):
            raise ValueError("a JSON fault must be an object")
        return FaultSpec.from_mapping(data)
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {part!r}")
        name = name.strip()
        if name in fields:
            raise ValueError(f"{name} given twice")
        fields[name] = _from_text(name, value.strip())
    return FaultSpec.from_mapping(fields)


def _from_text(name: str, value: str) -> Any:
    try:
        if name in _INT_FIELDS:
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
    except ValueError:
        raise ValueError(f"{name}: not a number: {value!r}") from None
    if name in _BOOL_FIELDS:
        if value not in ("true", "false"):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value == "true"
    return value


# ----------------------------------------------------------------------------- armed state


@attrs.define
class ArmedFault:
    """A fault in force: its spec plus what it has done so far."""

    id: int
    spec: FaultSpec
    armed_at: float
    hits: int = 0
    seen: int = 0

    @property
    def remaining(self) -> int | None:
        """Hits left, or ``None`` when unbounded."""
        return None if self.spec.count is None else self.spec.count - self.hits

    def expired(self, now: float) -> bool:
        """Used up or past its ``duration_s``."""
        if self.spec.count is not None and self.hits >= self.spec.count:
            return True
        return self.spec.duration_s is not None and now >= self.armed_at + self.spec.duration_s

    def to_json(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, **self.spec.to_json(), "hits": self.hits}
        if self.remaining is not None:
            out["remaining"] = self.remaining
        if self.spec.duration_s is not None:
            out["expires_in_s"] = max(0.0, self.armed_at + self.spec.duration_s - now)
        return out


@attrs.frozen
class StreamVerdict:
    """What to do with one outgoing stream message (see :meth:`FaultInjector.on_message`)."""

    discard: bool = False
    drop: DropMode | None = None
    malformed: bool = False
    replace: bool = False
    delay_s: float = 0.0
    #: The malformed frames to send before (or, with ``replace``, instead of)
    #: the message: one per ``ws_malformed`` fault that hit it, in arming order.
    variants: tuple[MalformedVariant, ...] = ()


class FaultInjector:
    """The armed faults of one simulator, consulted on every request and message.

    Pure and synchronous: callers pass ``now`` (Trio seconds), so the rules are
    unit-testable and run under a virtual clock. :attr:`version` changes on
    every arm/disarm, so stream connections can re-plan their timers.
    """

    def __init__(self, specs: Iterable[FaultSpec] = (), *, seed: int = 0, now: float = 0.0) -> None:
        self._rng = random.Random(f"faults:{seed}")
        self._next_id = 1
        self._faults: dict[int, ArmedFault] = {}
        self.version = 0
        for spec in specs:
            self.arm(spec, now)

    # -- arming ----------------------------------------------------------------

    def arm(self, spec: FaultSpec, now: float) -> ArmedFault:
        """Put ``spec`` in force; returns it with its id."""
        fault = ArmedFault(self._next_id, spec, now)
        self._next_id += 1
        self._faults[fault.id] = fault
        self.version += 1
        return fault

    def disarm(self, fault_id: int) -> bool:
        """Remove one fault; ``False`` when it was not armed."""
        removed = self._faults.pop(fault_id, None) is not None
        if removed:
            self.version += 1
        return removed

    def clear(self) -> int:
        """Remove every fault; returns how many there were."""
        n = len(self._faults)
        self._faults.clear()
        self.version += 1
        return n

    def active(self, now: float) -> list[ArmedFault]:
        """Faults in force at ``now`` (expired ones are dropped on the way)."""
        expired = [f.id for f in self._faults.values() if f.expired(now)]
        for fault_id in expired:
            del self._faults[fault_id]
        if expired:
            self.version += 1
        return list(self._faults.values())

    # -- REST ------------------------------------------------------------------

    def take_rest(self, phase: Phase, method: str, path: str, now: float) -> FaultSpec | None:
        """The REST fault that hits this request in ``phase``, counting the hit.

        ``rate_limit_burst`` applies before processing; ``rest_unknown`` after.
        The first matching fault (in arming order) wins.
        """
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind not in REST_KINDS or spec.kind == "order_invisible":
                continue
            fault_phase = "before" if spec.kind == "rate_limit_burst" else spec.phase
            if fault_phase != phase:
                continue
            if spec.method is not None and spec.method != method:
                continue
            if spec.path is not None and spec.path != path:
                continue
            if not self._chance(spec.probability):
                continue
            fault.hits += 1
            return spec
        return None

    def take_invisibility(self, now: float) -> float:
        """Seconds a just-created order stays invisible to queries (0 when none)."""
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind == "order_invisible" and self._chance(spec.probability):
                fault.hits += 1
                return spec.delay_s or 0.0
        return 0.0

    # -- streams ---------------------------------------------------------------

    def on_message(self, streams: frozenset[str], now: float) -> StreamVerdict:
        """Decide the fate of one outgoing message on a connection subscribed to ``streams``."""
        discard = False
        drop: DropMode | None = None
        malformed = False
        replace = False
        delay_s = 0.0
        variants: list[MalformedVariant] = []
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind not in STREAM_KINDS or not _targets(spec, streams):
                continue
            if spec.kind == "ws_stall":
                discard = True
            elif spec.kind == "ws_drop" and spec.probability < 1.0:
                if self._chance(spec.probability):
                    fault.hits += 1
                    drop = spec.mode
            elif spec.kind == "ws_malformed":
                fault.seen += 1
                hit = (
                    fault.seen % spec.every_n == 0
                    if spec.every_n is not None
                    else self._chance(spec.probability)
                )
                if hit:
                    fault.hits += 1
                    variants.append(spec.variant)
                    malformed = True
                    replace = replace or spec.replace
            elif spec.kind == "ws_delay" and self._chance(spec.probability):
                fault.hits += 1
                delay_s = max(delay_s, spec.delay_s or 0.0)
        return StreamVerdict(discard, drop, malformed, replace, delay_s, tuple(variants))

    def connection_deadline(
        self, streams: frozenset[str], opened_at: float, now: float
    ) -> tuple[float, FaultSpec] | None:
        """The next timed action (``ws_drop``/``ws_shutdown`` with ``every_s``) for a connection.

        The timer runs from the later of the connection's opening and the
        fault's arming, so arming a fault at run time affects live connections.
        """
        best: tuple[float, FaultSpec] | None = None
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind not in ("ws_drop", "ws_shutdown") or spec.every_s is None:
                continue
            if not _targets(spec, streams):
                continue
            at = max(opened_at, fault.armed_at) + spec.every_s
            if best is None or at < best[0]:
                best = (at, spec)
        return best

    def record_timed_hit(self, spec: FaultSpec) -> None:
        """Count one timed drop/shutdown against the fault that caused it."""
        for fault in self._faults.values():
            if fault.spec is spec:
                fault.hits += 1
                if fault.spec.count is not None and fault.hits >= fault.spec.count:
                    self.version += 1
                return

    # -- WebSocket API and user data stream -----------------------------------------

    def take_wsapi(self, phase: Phase, method: str, now: float) -> FaultSpec | None:
        """The ``wsapi_drop``/``wsapi_no_answer``/``wsapi_error`` hitting one request in ``phase``.

        Timed ``wsapi_drop`` faults (``every_s``) are :meth:`wsapi_deadline`'s.
        The first matching fault (in arming order) wins; the hit is counted.
        """
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind not in WSAPI_KINDS or spec.kind == "wsapi_delay":
                continue
            if spec.every_s is not None or spec.phase != phase:
                continue
            if spec.method is not None and spec.method != method:
                continue
            if not self._chance(spec.probability):
                continue
            fault.hits += 1
            return spec
        return None

    def take_wsapi_delay(self, method: str, now: float) -> float:
        """Seconds to hold the answer to one ``method`` request (0 when no ``wsapi_delay``)."""
        delay_s = 0.0
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind != "wsapi_delay" or spec.method not in (None, method):
                continue
            if self._chance(spec.probability):
                fault.hits += 1
                delay_s = max(delay_s, spec.delay_s or 0.0)
        return delay_s

    def wsapi_deadline(self, opened_at: float, now: float) -> tuple[float, FaultSpec] | None:
        """The next timed ``wsapi_drop`` (``every_s``) of a connection opened at ``opened_at``."""
        return self._next_timed("wsapi_drop", opened_at, now)

    def userstream_deadline(self, started_at: float, now: float) -> tuple[float, FaultSpec] | None:
        """The next timed ``userstream_terminate`` of a subscription started at ``started_at``."""
        return self._next_timed("userstream_terminate", started_at, now)

    def userstream_stalled_until(self, now: float) -> float | None:
        """While a ``userstream_stall`` is armed: when it ends (``math.inf``: when disarmed)."""
        until: float | None = None
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind == "userstream_stall":
                end = math.inf if spec.duration_s is None else fault.armed_at + spec.duration_s
                until = end if until is None else max(until, end)
        return until

    def take_userstream_terminate(self, now: float) -> bool:
        """Whether an untimed ``userstream_terminate`` ends a subscription at this event."""
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind != "userstream_terminate" or spec.every_s is not None:
                continue
            if self._chance(spec.probability):
                fault.hits += 1
                return True
        return False

    def _next_timed(
        self, kind: FaultKind, since: float, now: float
    ) -> tuple[float, FaultSpec] | None:
        best: tuple[float, FaultSpec] | None = None
        for fault in self.active(now):
            spec = fault.spec
            if spec.kind != kind or spec.every_s is None:
                continue
            at = max(since, fault.armed_at) + spec.every_s
            if best is None or at < best[0]:
                best = (at, spec)
        return best

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """JSON-able list of the faults in force."""
        return [f.to_json(now) for f in self.active(now)]

    def _chance(self, probability: float) -> bool:
        return probability >= 1.0 or self._rng.random() < probability


def hostile_frame(variant: str, message: str) -> str | bytes:
    """The malformed frame of ``variant`` for the outgoing ``message`` (text, or bytes: binary).

    ``message`` is the real frame (raw or combined); variants that rewrite a
    trade keep its envelope when it has one.
    """
    if variant == "truncated":
        return message[: max(1, len(message) // 2)]
    if variant == "binary":
        return b"\xff\xfe\x00" + message.encode("utf-8")
    if variant == "deep":
        return "[" * DEEP_FRAME_LEVELS + "]" * DEEP_FRAME_LEVELS
    envelope = (
        '{"stream":"' + _stream_of(message) + '","data":%s}' if '"stream"' in message else "%s"
    )
    base = '{"e":"trade","E":%s,"s":"BTCUSDT","t":%s,"p":%s,"q":%s,"T":%s,"m":true,"M":true}'
    if variant == "huge_int":
        big = "9" * 5000
        trade = base % (big, big, big, big, big)
    elif variant == "big_int":
        big = "9" * 4000
        trade = base % (big, big, '"1.0"', '"1.0"', big)
    elif variant == "huge_exponent":
        trade = base % ("1", "1", '"1e999999"', '"1e-999999"', "1")
    elif variant == "nested":
        trade = base % ('{"a":[1]}', "[1,2]", '{"p":"1"}', '[["1"]]', '{"T":{}}')
    elif variant == "nan":
        trade = base % ("NaN", "1", "Infinity", "-Infinity", "NaN")
    else:
        raise ValueError(f"unknown ws_malformed variant {variant!r}")
    return envelope % trade


def _stream_of(message: str) -> str:
    """The ``stream`` name of a combined message (or ``"?"``), for the envelope."""
    start = message.find('"stream":"')
    if start < 0:
        return "?"
    start += len('"stream":"')
    end = message.find('"', start)
    return message[start:end] if end > start else "?"


def _targets(spec: FaultSpec, streams: frozenset[str]) -> bool:
    return spec.stream is None or spec.stream in streams
