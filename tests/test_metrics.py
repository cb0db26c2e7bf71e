"""Tests of the Prometheus registry: exact exposition text, validation, escaping."""

from __future__ import annotations

import logging
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.metrics import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    MetricFamily,
    Registry,
    escape_help,
    escape_label_value,
    format_value,
)

# --------------------------------------------------------------------------- a tiny parser


def parse_sample_line(line: str) -> tuple[str, list[tuple[str, str]], str]:
    """Parse ``name{a="x",b="y"} value`` the way Prometheus does (with unescaping).

    Written independently of the renderer: a character-level scanner, so an
    escaping bug in the renderer shows up as a mismatch rather than being
    mirrored.
    """
    i = 0
    n = len(line)
    while i < n and line[i] not in "{ ":
        i += 1
    name = line[:i]
    labels: list[tuple[str, str]] = []
    if i < n and line[i] == "{":
        i += 1
        while line[i] != "}":
            j = line.index("=", i)
            label = line[i:j]
            assert line[j + 1] == '"', line
            k = j + 2
            value_chars: list[str] = []
            while line[k] != '"':
                if line[k] == "\\":
                    nxt = line[k + 1]
                    value_chars.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                    k += 2
                else:
                    value_chars.append(line[k])
                    k += 1
            labels.append((label, "".join(value_chars)))
            i = k + 1
            if line[i] == ",":
                i += 1
        i += 1
    assert line[i] == " ", line
    return name, labels, line[i + 1 :]


def parse_help_line(line: str) -> tuple[str, str]:
    assert line.startswith("# HELP ")
    name, _, text = line[len("# HELP ") :].partition(" ")
    out: list[str] = []
    k = 0
    while k < len(text):
        if text[k] == "\\":
            out.append({"\\": "\\", "n": "\n"}[text[k + 1]])
            k += 2
        else:
            out.append(text[k])
            k += 1
    return name, "".join(out)


def lines(text: str) -> list[str]:
    # The format separates lines with "\n" only; str.splitlines() would also split on
    # "\r", "\x1c", "\u2028"… which may legally appear unescaped in label values.
    assert text.endswith("\n")
    return text[:-1].split("\n")


# --------------------------------------------------------------------------- exact output


def test_content_type() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == ""


def test_counter_exact_text() -> None:
    reg = Registry()
    plain = reg.counter("jobs", "Jobs run.")
    labelled = reg.counter("orders_sent_total", "Orders sent.", ("venue", "side"))
    plain.inc()
    plain.inc(2.5)
    labelled.inc(venue="sim", side="sell")
    labelled.labels(venue="binance", side="buy").inc(3)
    labelled.inc(side="buy", venue="binance")  # keyword order is irrelevant
    assert reg.render() == (
        "# HELP jobs_total Jobs run.\n"
        "# TYPE jobs_total counter\n"
        "jobs_total 3.5\n"
        "# HELP orders_sent_total Orders sent.\n"
        "# TYPE orders_sent_total counter\n"
        'orders_sent_total{venue="binance",side="buy"} 4.0\n'
        'orders_sent_total{venue="sim",side="sell"} 1.0\n'
    )
    assert labelled.value(venue="binance", side="buy") == 4.0
    assert labelled.value(venue="nowhere", side="buy") == 0.0


def test_unlabelled_metrics_start_at_zero_labelled_ones_appear_on_first_use() -> None:
    reg = Registry()
    reg.counter("a", "A.")
    reg.gauge("b", "B.", ("x",))
    assert reg.render() == (
        "# HELP a_total A.\n# TYPE a_total counter\na_total 0.0\n# HELP b B.\n# TYPE b gauge\n"
    )


def test_gauge_exact_text() -> None:
    reg = Registry()
    g = reg.gauge("queue_depth", "Items queued.", ("queue",))
    g.set(7, queue="trades")
    g.inc(queue="intents")
    g.inc(4, queue="intents")
    g.dec(2, queue="intents")
    child = g.labels(queue="depth")
    child.set(-1.5)
    child.inc(0.5)
    child.dec()
    up = reg.gauge("up", "1 while up.")
    up.set(math.inf)
    assert reg.render() == (
        "# HELP queue_depth Items queued.\n"
        "# TYPE queue_depth gauge\n"
        'queue_depth{queue="depth"} -2.0\n'
        'queue_depth{queue="intents"} 3.0\n'
        'queue_depth{queue="trades"} 7.0\n'
        "# HELP up 1 while up.\n"
        "# TYPE up gauge\n"
        "up +Inf\n"
    )
    assert g.value(queue="trades") == 7.0


def test_histogram_exact_text() -> None:
    reg = Registry()
    h = reg.histogram("latency_seconds", "Request latency.", ("route",), buckets=(0.1, 1, 5))
    h.observe(0.05, route="/health")
    h.observe(0.1, route="/health")  # le is inclusive
    h.observe(3, route="/health")
    h.labels(route="/status").observe(100)
    assert reg.render() == (
        "# HELP latency_seconds Request latency.\n"
        "# TYPE latency_seconds histogram\n"
        'latency_seconds_bucket{route="/health",le="0.1"} 2.0\n'
        'latency_seconds_bucket{route="/health",le="1.0"} 2.0\n'
        'latency_seconds_bucket{route="/health",le="5.0"} 3.0\n'
        'latency_seconds_bucket{route="/health",le="+Inf"} 3.0\n'
        'latency_seconds_sum{route="/health"} 3.15\n'
        'latency_seconds_count{route="/health"} 3.0\n'
        'latency_seconds_bucket{route="/status",le="0.1"} 0.0\n'
        'latency_seconds_bucket{route="/status",le="1.0"} 0.0\n'
        'latency_seconds_bucket{route="/status",le="5.0"} 0.0\n'
        'latency_seconds_bucket{route="/status",le="+Inf"} 1.0\n'
        'latency_seconds_sum{route="/status"} 100.0\n'
        'latency_seconds_count{route="/status"} 1.0\n'
    )


def test_histogram_unlabelled_and_default_buckets() -> None:
    reg = Registry()
    h = reg.histogram("x", "X.")
    assert h.buckets == (*DEFAULT_BUCKETS, math.inf)
    h.observe(0.3)
    out = lines(reg.render())
    assert 'x_bucket{le="0.25"} 0.0' in out
    assert 'x_bucket{le="0.5"} 1.0' in out
    assert out[-2:] == ["x_sum 0.3", "x_count 1.0"]
    assert len([line for line in out if line.startswith("x_bucket")]) == len(DEFAULT_BUCKETS) + 1


def test_output_is_sorted_by_name_then_labels() -> None:
    reg = Registry()
    z = reg.gauge("zeta", "Z.", ("k",))
    reg.gauge("alpha", "A.")
    m = reg.counter("mid", "M.", ("k",))
    for k in ("b", "c", "a"):
        z.set(1, k=k)
        m.inc(k=k)
    out = lines(reg.render())
    samples = [line for line in out if not line.startswith("#")]
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


def test_format_value() -> None:
    assert format_value(1) == "1.0"
    assert format_value(0.1) == "0.1"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(1e21) == "1e+21"


# --------------------------------------------------------------------------- escaping


def test_label_value_and_help_escaping_exact() -> None:
    reg = Registry()
    g = reg.gauge("g", 'Help with "quotes", a back\\slash\nand a newline.', ("path",))
    g.set(1, path='C:\\dir\\"x"\nnext')
    assert reg.render() == (
        '# HELP g Help with "quotes", a back\\\\slash\\nand a newline.\n'
        "# TYPE g gauge\n"
        'g{path="C:\\\\dir\\\\\\"x\\"\\nnext"} 1.0\n'
    )
    assert escape_label_value('a"b') == 'a\\"b'
    assert escape_help('a"b') == 'a"b'


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.text(), min_size=1, max_size=4),
    help_text=st.text(),
    number=st.floats(allow_nan=False),
)
def test_label_values_and_help_round_trip_through_a_parser(
    values: list[str], help_text: str, number: float
) -> None:
    reg = Registry()
    names = [f"l{i}" for i in range(len(values))]
    g = reg.gauge("rt", help_text, names)
    g.set(number, **dict(zip(names, values, strict=True)))
    out = lines(reg.render())
    assert len(out) == 3  # nothing leaked a raw line feed
    assert parse_help_line(out[0]) == ("rt", help_text)
    name, labels, value = parse_sample_line(out[2])
    assert name == "rt"
    assert labels == list(zip(names, values, strict=True))
    assert float(value) == number


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", "a.b"])
def test_invalid_metric_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        Registry().gauge(name, "x")


@pytest.mark.parametrize("name", ["a", "_a", ":a", "a:b_c9"])
def test_valid_metric_names_are_accepted(name: str) -> None:
    Registry().gauge(name, "x")


@pytest.mark.parametrize(
    ("labelnames", "message"),
    [
        (("1x",), "invalid label name"),
        (("a:b",), "invalid label name"),
        (("__name",), "reserved"),
        (("a", "a"), "duplicate label"),
    ],
)
def test_invalid_label_names_are_rejected(labelnames: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Registry().counter("c", "C.", labelnames)


def test_le_is_reserved_on_histograms_only() -> None:
    reg = Registry()
    with pytest.raises(ValueError, match="reserved"):
        reg.histogram("h", "H.", ("le",))
    reg.gauge("g", "G.", ("le",))


@pytest.mark.parametrize("buckets", [(), (1.0, 1.0), (2.0, 1.0), (math.nan,), (1.0, math.inf, 2.0)])
def test_invalid_buckets_are_rejected(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Registry().histogram("h", "H.", buckets=buckets)


def test_counter_rejects_negative_and_nan_increments() -> None:
    c = Registry().counter("c", "C.", ("k",))
    with pytest.raises(ValueError, match="only increase"):
        c.inc(-1, k="a")
    with pytest.raises(ValueError, match="only increase"):
        c.labels(k="a").inc(-0.5)
    with pytest.raises(ValueError, match="only increase"):
        c.inc(math.nan, k="a")
    assert c.value(k="a") == 0.0


def test_histogram_rejects_nan() -> None:
    h = Registry().histogram("h", "H.")
    with pytest.raises(ValueError, match="NaN"):
        h.observe(math.nan)


def test_labels_must_match_exactly() -> None:
    c = Registry().counter("c", "C.", ("a", "b"))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        c.inc(a="1")
    with pytest.raises(ValueError, match=r"unexpected \['z'\]"):
        c.inc(a="1", b="2", z="3")
    g = Registry().gauge("g", "G.")
    with pytest.raises(ValueError):
        g.set(1, a="x")


def test_a_label_may_be_called_amount_or_value() -> None:
    reg = Registry()
    c = reg.counter("c", "C.", ("amount",))
    c.inc(2, amount="big")
    g = reg.gauge("g", "G.", ("value",))
    g.set(3, value="v")
    assert 'c_total{amount="big"} 2.0' in lines(reg.render())
    assert 'g{value="v"} 3.0' in lines(reg.render())


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("gauge", "x"), ("gauge", "x")),
        (("counter", "x"), ("counter", "x_total")),  # same family once normalised
        (("counter", "x"), ("gauge", "x_total")),  # same sample name
        (("histogram", "h"), ("gauge", "h_count")),
        (("histogram", "h"), ("gauge", "h_bucket")),
        (("gauge", "h_sum"), ("histogram", "h")),
    ],
)
def test_duplicate_or_colliding_registration_raises(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    reg = Registry()
    getattr(reg, first[0])(first[1], "first")
    with pytest.raises(ValueError):
        getattr(reg, second[0])(second[1], "second")


# --------------------------------------------------------------------------- collectors


def test_collector_values_are_computed_at_scrape_time() -> None:
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
    reg.gauge("tradingd_a", "First.").set(1)
    first = reg.render()
    assert first == (
        "# HELP tradingd_a First.\n# TYPE tradingd_a gauge\ntradingd_a 1.0\n"
        "# HELP tradingd_queue_depth Items queued.\n# TYPE tradingd_queue_depth gauge\n"
        'tradingd_queue_depth{queue="trades"} 3.0\n'
        "# HELP tradingd_restarts_total Restarts.\n# TYPE tradingd_restarts_total counter\n"
        'tradingd_restarts_total{child="feed"} 2.0\n'
        "# HELP tradingd_up Up.\n# TYPE tradingd_up gauge\ntradingd_up 1.0\n"
    )
    depth["trades"] = 9
    depth["intents"] = 0
    second = lines(reg.render())
    assert 'tradingd_queue_depth{queue="intents"} 0.0' in second
    assert 'tradingd_queue_depth{queue="trades"} 9.0' in second
    reg.unregister_collector(collect)
    assert reg.render() == "# HELP tradingd_a First.\n# TYPE tradingd_a gauge\ntradingd_a 1.0\n"
    with pytest.raises(ValueError):
        reg.unregister_collector(collect)


def test_a_failing_or_colliding_collector_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = Registry()
    reg.gauge("taken", "Registered.").set(5)

    def broken() -> list[MetricFamily]:
        raise RuntimeError("collector bug")

    def colliding() -> list[MetricFamily]:
        return [
            MetricFamily.gauge("taken", "Again.", [((), 1)]),
            MetricFamily.gauge("bad name", "Invalid.", [((), 1)]),
            MetricFamily.gauge("fine", "Kept.", [((), 2)]),
        ]

    reg.register_collector(broken)
    reg.register_collector(colliding)
    with caplog.at_level(logging.ERROR, logger="tradingd.metrics"):
        out = reg.render()
    assert out == (
        "# HELP fine Kept.\n# TYPE fine gauge\nfine 2.0\n"
        "# HELP taken Registered.\n# TYPE taken gauge\ntaken 5.0\n"
    )
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "failed" in messages
    assert "collides" in messages
    assert "invalid metric name" in messages
    assert any(r.exc_info for r in caplog.records)  # the broken collector's traceback


def test_instruments_are_safe_to_update_from_threads() -> None:
    reg = Registry()
    c = reg.counter("c", "C.", ("k",))
    h = reg.histogram("h", "H.", buckets=(1,))

    def work() -> None:
        for _ in range(2000):
            c.inc(k="x")
            h.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value(k="x") == 8000
    assert "h_count 8000.0" in lines(reg.render())
