"""The daemon's Prometheus metrics, on the reference client library ``prometheus-client``.

A :class:`Registry` is an ordinary object owned by one daemon (tests get a fresh
one): it wraps its own ``prometheus_client.CollectorRegistry``, never the
process-global ``REGISTRY``. Two ways to publish a value:

* **Counters** (:meth:`Registry.counter`) are updated where the event happens:
  ``events.inc(kind="started", child="feed")``.
* **Collectors** (:meth:`Registry.register_collector`) compute values when
  ``/metrics`` is scraped: queue depths, supervisor restarts, heartbeat ages —
  anything that already lives in another object and would otherwise have to be
  mirrored. They return :class:`MetricFamily` values, handed to the client
  library as ``GaugeMetricFamily``/``CounterMetricFamily``. A collector that
  raises, or returns an invalid family or a name already taken, is logged and
  skipped; it never breaks the scrape.

The body of ``GET /metrics`` is the library's text exposition (format 0.0.4),
families sorted by name and samples by label values. No ``_created`` series
are published: the scrape-time families carry no creation time, and the
counters' ``_created`` samples are dropped when collected (without calling the
process-global ``disable_created_metrics()``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import attrs
import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

__all__ = ["CONTENT_TYPE", "Counter", "MetricFamily", "Registry", "Sample"]

log = logging.getLogger("tradingd.metrics")

#: The ``Content-Type`` of :meth:`Registry.render` output.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# The classic names (the library itself accepts any UTF-8 name and escapes it on output).
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")


def _check_labelnames(metric: str, labelnames: Sequence[str]) -> None:
    for label in labelnames:
        if not _LABEL_RE.fullmatch(label) or label.startswith("__"):
            raise ValueError(f"metric {metric!r}: invalid label name {label!r}")
    if len(set(labelnames)) != len(labelnames):
        raise ValueError(f"metric {metric!r}: duplicate label names in {tuple(labelnames)}")


def _base_name(name: str) -> str:
    """A counter's family name: without ``_total`` (the library adds it to the samples)."""
    return name.removesuffix("_total")


#: Labels of one collected sample: a mapping, or ``(name, value)`` pairs.
LabelsLike = Mapping[str, str] | Iterable[tuple[str, str]]


@attrs.frozen
class Sample:
    """One series of a :class:`MetricFamily`: its labels and value."""

    labels: tuple[tuple[str, str], ...]
    value: float


@attrs.frozen
class MetricFamily:
    """A metric and all its samples at one instant; what collectors return.

    Build them with :meth:`gauge` and :meth:`counter`. A family's samples share
    one set of label names.
    """

    name: str
    type: Literal["counter", "gauge"]
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
        return cls(name, "gauge", help, _samples(samples))

    @classmethod
    def counter(
        cls, name: str, help: str, samples: Iterable[tuple[LabelsLike, float]]
    ) -> MetricFamily:
        """A counter family from ``(labels, value)`` pairs; ``name`` with or without ``_total``."""
        return cls(_base_name(name), "counter", help, _samples(samples))

    def _to_prometheus(self) -> Metric:
        """The library's family; ``ValueError`` if this one cannot be exposed."""
        _check_name(self.name)
        names = tuple(label for label, _ in self.samples[0].labels) if self.samples else ()
        _check_labelnames(self.name, names)
        family = (CounterMetricFamily if self.type == "counter" else GaugeMetricFamily)(
            self.name, self.help, labels=names
        )
        for sample in sorted(self.samples, key=lambda s: s.labels):
            values = dict(sample.labels)
            if len(values) != len(sample.labels) or values.keys() != set(names):
                raise ValueError(
                    f"{self.name!r}: sample labels {[k for k, _ in sample.labels]} "
                    f"differ from the family's {list(names)}"
                )
            family.add_metric([values[label] for label in names], sample.value)
        return family


def _samples(pairs: Iterable[tuple[LabelsLike, float]]) -> tuple[Sample, ...]:
    out: list[Sample] = []
    for labels, value in pairs:
        items = labels.items() if isinstance(labels, Mapping) else labels
        out.append(Sample(tuple((str(k), str(v)) for k, v in items), float(value)))
    return tuple(out)


def _exposed_names(family: MetricFamily) -> tuple[str, ...]:
    """The names a family takes in the exposition (for collision checks)."""
    if family.type == "counter":
        return (family.name, f"{family.name}_total")
    return (family.name,)


#: A callable returning families computed at scrape time.
Collector = Callable[[], Iterable[MetricFamily]]


class Counter:
    """A counter updated where the event happens; exposed as ``<name>_total``."""

    __slots__ = ("_counter", "_name")

    def __init__(self, name: str, counter: prometheus_client.Counter) -> None:
        self._name = name
        self._counter = counter

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series selected by ``labels``.

        Raises:
            ValueError: negative or NaN ``amount``, or labels that do not match.
        """
        if not amount >= 0:  # the library lets NaN through
            raise ValueError(f"counter {self._name!r} can only increase; got {amount}")
        (self._counter.labels(**labels) if labels else self._counter).inc(amount)


class Registry:
    """The metrics of one daemon; :meth:`render` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self._registry = prometheus_client.CollectorRegistry()
        self._collectors: list[Collector] = []
        self._reserved: set[str] = set()  # names taken by the counters
        self._lock = threading.Lock()
        self._registry.register(_ScrapeTime(self))

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """Create and register a counter (``name`` with or without ``_total``).

        Raises:
            ValueError: invalid name or label names, or the name is taken.
        """
        _check_name(name)
        _check_labelnames(name, tuple(labelnames))
        counter = prometheus_client.Counter(name, help, labelnames, registry=self._registry)
        with self._lock:
            self._reserved.update(_exposed_names(MetricFamily.counter(name, help, ())))
        return Counter(_base_name(name), counter)

    def register_collector(self, fn: Collector) -> None:
        """Call ``fn`` at every :meth:`render` for families computed at scrape time.

        ``fn`` must be cheap and non-blocking (it runs on the event loop) and
        return families whose names are not registered counters.
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

    def collect(self) -> list[Metric]:
        """Every family, counters and collectors, sorted by name, without ``_created``."""
        families = list(self._registry.collect())
        for family in families:
            if family.type in ("counter", "gauge"):  # histogram samples keep their order
                created = f"{family.name}_created"
                family.samples = sorted(
                    (s for s in family.samples if s.name != created),
                    key=lambda s: (s.name, tuple(s.labels.values())),
                )
        families.sort(key=lambda f: f.name)
        return families

    def render(self) -> str:
        """The exposition text (format 0.0.4); empty when nothing is registered."""
        return generate_latest(self).decode()


class _ScrapeTime:
    """The registered collectors of a :class:`Registry`, as one library collector."""

    def __init__(self, registry: Registry) -> None:
        self._owner = registry

    def collect(self) -> Iterable[Metric]:
        with self._owner._lock:
            collectors = list(self._owner._collectors)
            taken = dict.fromkeys(self._owner._reserved, "a registered counter")
        for fn in collectors:
            try:
                produced = list(fn())
            except Exception:
                log.exception("metrics collector %r failed; its metrics are skipped", fn)
                continue
            for family in produced:
                try:
                    if not isinstance(family, MetricFamily):
                        raise ValueError(f"returned {type(family).__name__}, not MetricFamily")
                    names = _exposed_names(family)
                    for name in names:
                        if name in taken:
                            raise ValueError(f"{family.name!r} collides with {taken[name]}")
                    metric = family._to_prometheus()
                except ValueError as e:
                    log.error("metrics collector %r: %s; family skipped", fn, e)
                    continue
                taken.update(dict.fromkeys(names, repr(family.name)))
                yield metric
