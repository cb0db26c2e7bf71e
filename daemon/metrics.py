"""A minimal Prometheus registry, rendered in the text exposition format 0.0.4.

Why not ``prometheus_client``: tradingd needs counters, gauges, histograms and
values computed at scrape time — a few hundred lines — while the client library
brings a global default registry, process collectors, multiprocess modes and
``_created`` samples we would have to switch off. Here a :class:`Registry` is an
ordinary object handed to whoever needs it (tests get a fresh one), and its
output is deterministic: families sorted by name, samples sorted by label
values, so a scrape can be compared byte for byte.

Two ways to publish a value:

* **Instruments** (:class:`Counter`, :class:`Gauge`, :class:`Histogram`) are
  updated where the event happens: ``orders_sent.inc(venue="binance")``.
* **Collectors** (:meth:`Registry.register_collector`) compute values when
  ``/metrics`` is scraped: queue depths, supervisor restarts, heartbeat ages —
  anything that already lives in another object and would otherwise have to be
  mirrored. A collector that raises is logged and skipped; it never breaks the
  scrape.

Instruments may be updated from worker threads (``trio.to_thread``); each holds a
lock around its values.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

import attrs

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricFamily",
    "Registry",
    "Sample",
]

log = logging.getLogger("tradingd.metrics")

#: The ``Content-Type`` of :meth:`Registry.render` output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram upper bounds in seconds, suited to request latencies (as in the
#: reference client); ``+Inf`` is always added.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

MetricType = Literal["counter", "gauge", "histogram", "untyped"]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _validate_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def _validate_labelnames(
    metric: str, labelnames: Iterable[str], reserved: Sequence[str] = ()
) -> tuple[str, ...]:
    names = tuple(labelnames)
    for label in names:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(
                f"metric {metric!r}: invalid label name {label!r}: "
                "must match [a-zA-Z_][a-zA-Z0-9_]*"
            )
        if label.startswith("__"):
            raise ValueError(f"metric {metric!r}: label names starting with '__' are reserved")
        if label in reserved:
            raise ValueError(f"metric {metric!r}: label name {label!r} is reserved")
    if len(set(names)) != len(names):
        raise ValueError(f"metric {metric!r}: duplicate label names in {names}")
    return names


def _family_name(kind: MetricType, name: str) -> str:
    """Counters are named without ``_total`` internally; it is added on output."""
    _validate_name(name)
    if kind == "counter" and name.endswith("_total"):
        name = name[: -len("_total")]
        _validate_name(name)
    return name


def _sample_names(kind: MetricType, name: str) -> tuple[str, ...]:
    """Every sample name a family of ``kind`` called ``name`` writes (for collision checks)."""
    if kind == "counter":
        return (f"{name}_total",)
    if kind == "histogram":
        return (name, f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape ``# HELP`` text: backslash and line feed (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Format a sample value the way the reference client does (``1.0``, ``+Inf``, ``NaN``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


#: Labels of one collected sample: a mapping, or ``(name, value)`` pairs in output order.
LabelsLike = Mapping[str, str] | Iterable[tuple[str, str]]


@attrs.frozen
class Sample:
    """One line of output: ``<family name><suffix>{labels} value``.

    ``suffix`` is ``""`` for gauges, ``"_total"`` for counters and
    ``"_bucket"``/``"_sum"``/``"_count"`` for histograms.
    """

    suffix: str
    labels: tuple[tuple[str, str], ...]
    value: float


@attrs.frozen
class MetricFamily:
    """A metric and all its samples at one instant; what collectors return.

    Build them with :meth:`gauge` and :meth:`counter` from collectors; the
    instruments build theirs in ``collect()``.
    """

    name: str
    type: MetricType
    help: str
    samples: tuple[Sample, ...]

    @classmethod
    def gauge(
        cls, name: str, help: str, samples: Iterable[tuple[LabelsLike, float]]
    ) -> MetricFamily:
        """A gauge family from ``(labels, value)`` pairs.

        ``labels`` is a mapping or a sequence of ``(name, value)`` pairs; ``()``
        for an unlabelled sample.
        """
        return cls(name, "gauge", help, _samples("", samples))

    @classmethod
    def counter(
        cls, name: str, help: str, samples: Iterable[tuple[LabelsLike, float]]
    ) -> MetricFamily:
        """A counter family from ``(labels, value)`` pairs; ``name`` with or without ``_total``."""
        return cls(_family_name("counter", name), "counter", help, _samples("_total", samples))


def _label_pairs(labels: LabelsLike) -> tuple[tuple[str, str], ...]:
    items = labels.items() if isinstance(labels, Mapping) else labels
    return tuple((str(k), str(v)) for k, v in items)


def _samples(suffix: str, pairs: Iterable[tuple[LabelsLike, float]]) -> tuple[Sample, ...]:
    return tuple(Sample(suffix, _label_pairs(labels), float(value)) for labels, value in pairs)


#: A callable returning families computed at scrape time.
Collector = Callable[[], Iterable[MetricFamily]]


class _Metric:
    """What the three instruments share: name, labels, children, a lock."""

    _type: MetricType = "untyped"
    _reserved_labels: tuple[str, ...] = ()

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name = _family_name(self._type, name)
        self.help = help
        self.labelnames = _validate_labelnames(name, labelnames, self._reserved_labels)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            missing = sorted(set(self.labelnames) - set(labels))
            extra = sorted(set(labels) - set(self.labelnames))
            raise ValueError(
                f"metric {self.name!r} takes labels {list(self.labelnames)}; "
                f"missing {missing}, unexpected {extra}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def _pairs(self, key: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.labelnames, key, strict=True))

    def collect(self) -> MetricFamily:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up (events, bytes, errors). Rendered as ``<name>_total``."""

    _type: MetricType = "counter"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if self.labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series selected by ``labels``.

        Raises:
            ValueError: negative or NaN ``amount``, or labels that do not match.
        """
        if not amount >= 0:
            raise ValueError(f"counter {self.name!r} can only increase; got {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def labels(self, **labels: str) -> _CounterChild:
        """The series for ``labels``, to update repeatedly without re-checking labels."""
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)
        return _CounterChild(self, key)

    def value(self, **labels: str) -> float:
        """The current value of one series (``0.0`` if never incremented)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def _inc_key(self, key: tuple[str, ...], amount: float) -> None:
        if not amount >= 0:
            raise ValueError(f"counter {self.name!r} can only increase; got {amount}")
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def collect(self) -> MetricFamily:
        with self._lock:
            items = sorted(self._values.items())
        samples = tuple(Sample("_total", self._pairs(k), v) for k, v in items)
        return MetricFamily(self.name, "counter", self.help, samples)


class _CounterChild:
    __slots__ = ("_key", "_parent")

    def __init__(self, parent: Counter, key: tuple[str, ...]) -> None:
        self._parent = parent
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        self._parent._inc_key(self._key, amount)


class Gauge(_Metric):
    """A value that goes up and down (depths, ages, states)."""

    _type: MetricType = "gauge"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if self.labelnames else {(): 0.0}

    def set(self, value: float, /, **labels: str) -> None:
        """Set the series selected by ``labels`` to ``value``."""
        self._set_key(self._key(labels), value)

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (may be negative) to a series."""
        self._add_key(self._key(labels), amount)

    def dec(self, amount: float = 1.0, /, **labels: str) -> None:
        """Subtract ``amount`` from a series."""
        self._add_key(self._key(labels), -amount)

    def labels(self, **labels: str) -> _GaugeChild:
        """The series for ``labels``, to update repeatedly without re-checking labels."""
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)
        return _GaugeChild(self, key)

    def value(self, **labels: str) -> float:
        """The current value of one series (``0.0`` if never set)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def _set_key(self, key: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._values[key] = float(value)

    def _add_key(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def collect(self) -> MetricFamily:
        with self._lock:
            items = sorted(self._values.items())
        samples = tuple(Sample("", self._pairs(k), v) for k, v in items)
        return MetricFamily(self.name, "gauge", self.help, samples)


class _GaugeChild:
    __slots__ = ("_key", "_parent")

    def __init__(self, parent: Gauge, key: tuple[str, ...]) -> None:
        self._parent = parent
        self._key = key

    def set(self, value: float) -> None:
        self._parent._set_key(self._key, value)

    def inc(self, amount: float = 1.0) -> None:
        self._parent._add_key(self._key, amount)

    def dec(self, amount: float = 1.0) -> None:
        self._parent._add_key(self._key, -amount)


@attrs.define
class _HistogramSeries:
    counts: list[int]  # per bucket, not cumulative; the last is +Inf
    sum: float = 0.0
    count: int = 0


class Histogram(_Metric):
    """Counts observations into cumulative buckets (latencies, sizes).

    Rendered as ``<name>_bucket{le="…"}`` (cumulative, ending with ``+Inf``),
    ``<name>_sum`` and ``<name>_count``.
    """

    _type: MetricType = "histogram"
    _reserved_labels: tuple[str, ...] = ("le",)

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = [float(b) for b in buckets]
        if bounds and bounds[-1] == math.inf:
            bounds.pop()
        if not bounds:
            raise ValueError(f"histogram {self.name!r} needs at least one finite bucket")
        if any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"histogram {self.name!r}: bucket bounds must be finite: {bounds}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {self.name!r}: buckets must increase strictly: {bounds}")
        self.buckets: tuple[float, ...] = (*bounds, math.inf)
        self._series: dict[tuple[str, ...], _HistogramSeries] = {}
        if not self.labelnames:
            self._series[()] = self._new_series()

    def _new_series(self) -> _HistogramSeries:
        return _HistogramSeries(counts=[0] * len(self.buckets))

    def observe(self, value: float, /, **labels: str) -> None:
        """Record one observation in the series selected by ``labels``.

        Raises:
            ValueError: ``value`` is NaN (it would poison ``_sum``) or labels do not match.
        """
        self._observe_key(self._key(labels), value)

    def labels(self, **labels: str) -> _HistogramChild:
        """The series for ``labels``, to observe repeatedly without re-checking labels."""
        key = self._key(labels)
        with self._lock:
            if key not in self._series:
                self._series[key] = self._new_series()
        return _HistogramChild(self, key)

    def _observe_key(self, key: tuple[str, ...], value: float) -> None:
        if math.isnan(value):
            raise ValueError(f"histogram {self.name!r}: cannot observe NaN")
        index = next(i for i, bound in enumerate(self.buckets) if value <= bound)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
            series.counts[index] += 1
            series.sum += value
            series.count += 1

    def collect(self) -> MetricFamily:
        with self._lock:
            items = sorted((k, list(s.counts), s.sum, s.count) for k, s in self._series.items())
        samples: list[Sample] = []
        for key, counts, total, count in items:
            pairs = self._pairs(key)
            cumulative = 0
            for bound, n in zip(self.buckets, counts, strict=True):
                cumulative += n
                samples.append(Sample("_bucket", (*pairs, ("le", format_value(bound))), cumulative))
            samples.append(Sample("_sum", pairs, total))
            samples.append(Sample("_count", pairs, count))
        return MetricFamily(self.name, "histogram", self.help, tuple(samples))


class _HistogramChild:
    __slots__ = ("_key", "_parent")

    def __init__(self, parent: Histogram, key: tuple[str, ...]) -> None:
        self._parent = parent
        self._key = key

    def observe(self, value: float) -> None:
        self._parent._observe_key(self._key, value)


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """The metrics of one daemon; :meth:`render` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._sample_names: dict[str, str] = {}  # sample name -> family name
        self._collectors: list[Collector] = []
        self._lock = threading.Lock()

    def _register(self, metric: _M) -> _M:
        names = _sample_names(metric._type, metric.name)
        with self._lock:
            for sample_name in names:
                owner = self._sample_names.get(sample_name)
                if owner is not None:
                    raise ValueError(
                        f"metric {metric.name!r} ({metric._type}) collides with the "
                        f"already registered {owner!r} on {sample_name!r}"
                    )
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name!r} is already registered")
            self._metrics[metric.name] = metric
            for sample_name in names:
                self._sample_names[sample_name] = metric.name
        return metric

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        """Create and register a counter (``name`` with or without ``_total``).

        Raises:
            ValueError: invalid name or label names, or the name is taken.
        """
        return self._register(Counter(name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        """Create and register a gauge.

        Raises:
            ValueError: invalid name or label names, or the name is taken.
        """
        return self._register(Gauge(name, help, labelnames))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Create and register a histogram.

        Raises:
            ValueError: invalid name, label names (``le`` is reserved) or buckets,
                or the name is taken.
        """
        return self._register(Histogram(name, help, labelnames, buckets))

    def register_collector(self, fn: Collector) -> None:
        """Call ``fn`` at every :meth:`render` for families computed at scrape time.

        ``fn`` must be cheap and non-blocking (it runs on the event loop) and
        return families whose names are not registered instruments.
        """
        with self._lock:
            self._collectors.append(fn)

    def unregister_collector(self, fn: Collector) -> None:
        """Stop calling ``fn`` (e.g. when the component that owns it stops).

        Raises:
            ValueError: ``fn`` is not registered.
        """
        with self._lock:
            self._collectors.remove(fn)

    def collect(self) -> list[MetricFamily]:
        """Every family, instruments and collectors, sorted by name.

        A collector that raises, or returns an invalid family or a name already
        taken, is logged and its output (or that family) skipped: one broken
        collector must not blank the whole scrape.
        """
        with self._lock:
            metrics = list(self._metrics.values())
            collectors = list(self._collectors)
            taken = dict(self._sample_names)
        families = [m.collect() for m in metrics]
        for fn in collectors:
            try:
                produced = list(fn())
            except Exception:
                log.exception("metrics collector %r failed; its metrics are skipped", fn)
                continue
            for family in produced:
                problem = _check_family(family, taken)
                if problem:
                    log.error("metrics collector %r: %s; family skipped", fn, problem)
                    continue
                for sample_name in _sample_names(family.type, family.name):
                    taken[sample_name] = family.name
                families.append(family)
        families.sort(key=lambda f: f.name)
        return families

    def render(self) -> str:
        """The exposition text (format 0.0.4); empty when nothing is registered."""
        return "".join(_render_family(f) for f in self.collect())


def _check_family(family: object, taken: Mapping[str, str]) -> str | None:
    """Why a collector's ``family`` cannot be rendered, or ``None`` if it can."""
    if not isinstance(family, MetricFamily):
        return f"returned {type(family).__name__}, not MetricFamily"
    if not _NAME_RE.fullmatch(family.name):
        return f"invalid metric name {family.name!r}"
    for sample_name in _sample_names(family.type, family.name):
        if sample_name in taken:
            return f"{family.name!r} collides with {taken[sample_name]!r} on {sample_name!r}"
    for sample in family.samples:
        for label, _ in sample.labels:
            if not _LABEL_RE.fullmatch(label):
                return f"{family.name!r}: invalid label name {label!r}"
    return None


def _render_family(family: MetricFamily) -> str:
    # In format 0.0.4 a counter's HELP/TYPE lines carry the _total name too.
    shown = f"{family.name}_total" if family.type == "counter" else family.name
    lines = [
        f"# HELP {shown} {escape_help(family.help)}\n",
        f"# TYPE {shown} {family.type}\n",
    ]
    samples = family.samples
    if family.type != "histogram":  # histograms are already in their required order
        samples = tuple(sorted(samples, key=lambda s: (s.suffix, s.labels)))
    for sample in samples:
        if sample.labels:
            body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
            lines.append(f"{family.name}{sample.suffix}{{{body}}} {format_value(sample.value)}\n")
        else:
            lines.append(f"{family.name}{sample.suffix} {format_value(sample.value)}\n")
    return "".join(lines)
