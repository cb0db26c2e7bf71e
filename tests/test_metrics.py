"""Tests of the metrics registry (on prometheus-client): exact text, collectors, validation.

Every exposition is also read back with prometheus-client's own text parser, and
the last test scrapes ``/metrics`` from a real daemon's admin server.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import attrs
import httpx2
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from daemon import config as configmod
from daemon.app import Daemon
from daemon.metrics import CONTENT_TYPE, MetricFamily, Registry
from daemon.notify import Notifier

TIMEOUT_S = 20


def parse(
    text: str,
) -> dict[str, tuple[str, str, dict[tuple[str, frozenset[tuple[str, str]]], float]]]:
    """Family name -> (type, help, {(sample name, labels): value}), by the library's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in out, f"family {family.name!r} twice"
        samples = {(s.name, frozenset(s.labels.items())): s.value for s in family.samples}
        out[family.name] = (family.type, family.documentation, samples)
    return out


def assert_no_created(text: str) -> None:
    assert "_created" not in text
    for family in text_string_to_metric_families(text):
        assert not family.name.endswith("_created")
        assert not any(s.name.endswith("_created") for s in family.samples)


# --------------------------------------------------------------------------- exact output


def test_content_type() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == ""


def test_counter_exact_text_without_created() -> None:
    reg = Registry()
    plain = reg.counter("jobs", "Jobs run.")
    labelled = reg.counter("orders_sent_total", "Orders sent.", ("venue", "side"))
    plain.inc()
    plain.inc(2.5)
    labelled.inc(venue="sim", side="sell")
    labelled.inc(3, venue="binance", side="buy")
    labelled.inc(side="buy", venue="binance")  # keyword order is irrelevant
    text = reg.render()
    assert text == (
        "# HELP jobs_total Jobs run.\n"
        "# TYPE jobs_total counter\n"
        "jobs_total 3.5\n"
        "# HELP orders_sent_total Orders sent.\n"
        "# TYPE orders_sent_total counter\n"
        'orders_sent_total{side="buy",venue="binance"} 4.0\n'
        'orders_sent_total{side="sell",venue="sim"} 1.0\n'
    )
    assert_no_created(text)
    assert parse(text)["orders_sent"] == (
        "counter",
        "Orders sent.",
        {
            ("orders_sent_total", frozenset({("venue", "binance"), ("side", "buy")})): 4.0,
            ("orders_sent_total", frozenset({("venue", "sim"), ("side", "sell")})): 1.0,
        },
    )


def test_unlabelled_counters_start_at_zero_labelled_ones_appear_on_first_use() -> None:
    reg = Registry()
    reg.counter("a", "A.")
    reg.counter("b", "B.", ("x",))
    assert reg.render() == (
        "# HELP a_total A.\n# TYPE a_total counter\na_total 0.0\n"
        "# HELP b_total B.\n# TYPE b_total counter\n"
    )


def test_collector_values_are_computed_at_scrape_time_and_sorted() -> None:
    reg = Registry()
    depth = {"trades": 3}

    def collect() -> list[MetricFamily]:
        return [
            MetricFamily.gauge(
                "tradingd_queue_depth",
                "Items queued.",
                [({"queue": q}, d) for q, d in depth.items()],
            ),
            MetricFamily.counter(
                "tradingd_restarts_total", "Restarts.", [((("child", "feed"),), 2)]
            ),
            MetricFamily.gauge("tradingd_up", "Up.", [((), 1)]),
        ]

    reg.register_collector(collect)
    reg.counter("tradingd_a", "First.").inc()
    assert reg.render() == (
        "# HELP tradingd_a_total First.\n# TYPE tradingd_a_total counter\ntradingd_a_total 1.0\n"
        "# HELP tradingd_queue_depth Items queued.\n# TYPE tradingd_queue_depth gauge\n"
        'tradingd_queue_depth{queue="trades"} 3.0\n'
        "# HELP tradingd_restarts_total Restarts.\n# TYPE tradingd_restarts_total counter\n"
        'tradingd_restarts_total{child="feed"} 2.0\n'
        "# HELP tradingd_up Up.\n# TYPE tradingd_up gauge\ntradingd_up 1.0\n"
    )
    depth["trades"] = 9
    depth["intents"] = 0
    text = reg.render()
    assert (
        'tradingd_queue_depth{queue="intents"} 0.0\ntradingd_queue_depth{queue="trades"} 9.0\n'
    ) in text
    assert_no_created(text)
    reg.unregister_collector(collect)
    assert reg.render() == (
        "# HELP tradingd_a_total First.\n# TYPE tradingd_a_total counter\ntradingd_a_total 1.0\n"
    )
    with pytest.raises(ValueError):
        reg.unregister_collector(collect)


def test_families_and_samples_are_sorted() -> None:
    reg = Registry()
    reg.register_collector(
        lambda: [
            MetricFamily.gauge("zeta", "Z.", [({"k": k}, 1) for k in "bca"]),
            MetricFamily.gauge("alpha", "A.", [((), 0)]),
        ]
    )
    mid = reg.counter("mid", "M.", ("k",))
    for k in "bca":
        mid.inc(k=k)
    samples = [line for line in reg.render().split("\n") if line and not line.startswith("#")]
    assert samples == [
        "alpha 0.0",
        'mid_total{k="a"} 1.0',
        'mid_total{k="b"} 1.0',
        'mid_total{k="c"} 1.0',
        'zeta{k="a"} 1.0',
        'zeta{k="b"} 1.0',
        'zeta{k="c"} 1.0',
    ]
    assert reg.render() == reg.render()


def test_special_values() -> None:
    reg = Registry()
    reg.register_collector(
        lambda: [
            MetricFamily.gauge(
                "g",
                "G.",
                [({"v": "inf"}, math.inf), ({"v": "ninf"}, -math.inf), ({"v": "nan"}, math.nan)],
            )
        ]
    )
    text = reg.render()
    assert 'g{v="inf"} +Inf\n' in text
    assert 'g{v="ninf"} -Inf\n' in text
    assert 'g{v="nan"} NaN\n' in text


# --------------------------------------------------------------------------- escaping


def test_label_value_and_help_escaping_exact() -> None:
    reg = Registry()
    reg.register_collector(
        lambda: [
            MetricFamily.gauge(
                "g",
                'Help with "quotes", a back\\slash\nand a newline.',
                [({"path": 'C:\\dir\\"x"\nnext'}, 1)],
            )
        ]
    )
    assert reg.render() == (
        '# HELP g Help with "quotes", a back\\\\slash\\nand a newline.\n'
        "# TYPE g gauge\n"
        'g{path="C:\\\\dir\\\\\\"x\\"\\nnext"} 1.0\n'
    )


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.text(), min_size=1, max_size=4),
    help_text=st.text().map(str.strip),  # the parser strips each line
    number=st.floats(allow_nan=False),
)
def test_label_values_and_help_round_trip_through_the_library_parser(
    values: list[str], help_text: str, number: float
) -> None:
    names = [f"l{i}" for i in range(len(values))]
    reg = Registry()
    reg.register_collector(
        lambda: [
            MetricFamily.gauge("rt", help_text, [(list(zip(names, values, strict=True)), number)])
        ]
    )
    text = reg.render()
    assert text.count("\n") == 3  # nothing leaked a raw line feed
    kind, help_back, samples = parse(text)["rt"]
    assert (kind, help_back) == ("gauge", help_text)
    assert samples == {("rt", frozenset(zip(names, values, strict=True))): number}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", "a.b"])
def test_invalid_metric_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        Registry().counter(name, "x")


@pytest.mark.parametrize("name", ["a", "_a", ":a", "a:b_c9"])
def test_valid_metric_names_are_accepted(name: str) -> None:
    Registry().counter(name, "x")


@pytest.mark.parametrize(
    ("labelnames", "message"),
    [
        (("1x",), "invalid label name"),
        (("a:b",), "invalid label name"),
        (("é",), "invalid label name"),
        (("__name",), "invalid label name"),
        (("a", "a"), "duplicate label"),
    ],
)
def test_invalid_label_names_are_rejected(labelnames: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registry().counter("c", "C.", labelnames)


@pytest.mark.parametrize("second", ["x", "x_total"])
def test_duplicate_counter_registration_raises(second: str) -> None:
    reg = Registry()
    reg.counter("x", "first")
    with pytest.raises(ValueError):
        reg.counter(second, "second")


def test_counter_rejects_negative_and_nan_increments() -> None:
    reg = Registry()
    c = reg.counter("c", "C.", ("k",))
    for amount in (-1, -0.5, math.nan):
        with pytest.raises(ValueError, match="only increase"):
            c.inc(amount, k="a")
    assert "c_total" not in reg.render().replace("# HELP c_total", "").replace("# TYPE c_total", "")


def test_labels_must_match_exactly() -> None:
    reg = Registry()
    c = reg.counter("c", "C.", ("a", "b"))
    with pytest.raises(ValueError):
        c.inc(a="1")
    with pytest.raises(ValueError):
        c.inc(a="1", b="2", z="3")
    with pytest.raises(ValueError):
        c.inc()
    with pytest.raises(ValueError):
        reg.counter("g", "G.").inc(a="x")


def test_a_label_may_be_called_amount() -> None:
    reg = Registry()
    reg.counter("c", "C.", ("amount",)).inc(2, amount="big")
    assert 'c_total{amount="big"} 2.0\n' in reg.render()


# --------------------------------------------------------------------------- collectors


def test_a_failing_invalid_or_colliding_collector_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = Registry()
    reg.counter("taken", "Registered.").inc(5)

    def broken() -> list[MetricFamily]:
        raise RuntimeError("collector bug")

    def colliding() -> list[object]:
        return [
            MetricFamily.gauge("taken_total", "Again.", [((), 1)]),
            MetricFamily.counter("taken", "Again.", [((), 1)]),
            MetricFamily.gauge("bad name", "Invalid.", [((), 1)]),
            MetricFamily.gauge("bad_label", "Invalid.", [({"a-b": "x"}, 1)]),
            MetricFamily.gauge("mixed", "Mixed labels.", [({"a": "1"}, 1), ({"b": "2"}, 1)]),
            "not a family",
            MetricFamily.gauge("fine", "Kept.", [((), 2)]),
            MetricFamily.gauge("fine", "Twice.", [((), 3)]),
        ]

    reg.register_collector(broken)
    reg.register_collector(colliding)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="tradingd.metrics"):
        out = reg.render()
    assert out == (
        "# HELP fine Kept.\n# TYPE fine gauge\nfine 2.0\n"
        "# HELP taken_total Registered.\n# TYPE taken_total counter\ntaken_total 5.0\n"
    )
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "failed" in messages
    assert messages.count("collides") == 3
    assert "invalid metric name" in messages
    assert "invalid label name" in messages
    assert "differ from the family's" in messages
    assert "not MetricFamily" in messages
    assert any(r.exc_info for r in caplog.records)  # the broken collector's traceback


def test_counters_are_safe_to_update_from_threads() -> None:
    reg = Registry()
    c = reg.counter("c", "C.", ("k",))

    def work() -> None:
        for _ in range(2000):
            c.inc(k="x")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 'c_total{k="x"} 8000.0\n' in reg.render()


# --------------------------------------------------------------------------- a real daemon

#: The families the daemon itself publishes (orders and market data add theirs
#: when configured), by the parser's name (counters without ``_total``).
DAEMON_FAMILIES = {
    "tradingd_up": "gauge",
    "tradingd_uptime_seconds": "gauge",
    "tradingd_health": "gauge",
    "tradingd_loop_lag_milliseconds": "gauge",
    "tradingd_child_restarts": "counter",
    "tradingd_child_state": "gauge",
    "tradingd_watchdog_pings": "counter",
    "tradingd_queue_depth": "gauge",
    "tradingd_queue_capacity": "gauge",
    "tradingd_supervisor_events": "counter",
}


class ReadyNotifier(Notifier):
    """A notifier without a socket (as outside systemd) that also tells the test "ready"."""

    def __init__(self) -> None:
        super().__init__(None)
        self.is_ready = trio.Event()

    def ready(self, status: str | None = None) -> bool:
        self.is_ready.set()
        return super().ready(status)


async def test_metrics_scraped_from_a_running_daemon_parse_with_the_library(
    tmp_path: Path,
) -> None:
    base = configmod.defaults()
    config = attrs.evolve(
        base,
        source="test",
        daemon=attrs.evolve(
            base.daemon,
            state_dir=tmp_path / "state",
            control_socket=str(tmp_path / "c.sock"),
            shutdown_timeout_s=5.0,
            start_timeout_s=5.0,
        ),
        admin=attrs.evolve(base.admin, listen="127.0.0.1:0"),
    )
    notifier = ReadyNotifier()
    daemon = Daemon(config, notifier=notifier)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.run)
            await notifier.is_ready.wait()
            assert daemon.admin_address is not None
            host, port = daemon.admin_address
            async with httpx2.AsyncClient() as client:
                r = await client.get(f"http://{host}:{port}/metrics")
            daemon.request_stop("test")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE
    assert_no_created(r.text)
    families = parse(r.text)
    assert {name: families[name][0] for name in DAEMON_FAMILIES} == DAEMON_FAMILIES
    assert families["tradingd_up"][2] == {("tradingd_up", frozenset()): 1.0}
    assert families["tradingd_health"][1] == "Health level: 0 healthy, 1 degraded, 2 unhealthy."
    states = families["tradingd_child_state"][2]
    assert (
        states[("tradingd_child_state", frozenset({("child", "root/admin"), ("state", "running")}))]
        == 1.0
    )
    restarts = families["tradingd_child_restarts"][2]
    assert restarts[("tradingd_child_restarts_total", frozenset({("child", "root/admin")}))] == 0
    events = families["tradingd_supervisor_events"][2]
    assert any(labels >= {("kind", "started")} for _, labels in events)
