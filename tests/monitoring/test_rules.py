"""The rules of ``config/prometheus/``, checked by the real ``promtool`` and a real scrape.

* ``promtool check rules`` accepts the file;
* ``promtool test rules`` passes the unit tests of ``config/prometheus/tests/``, and those
  tests cover every alert both ways: an evaluation where it fires (after its ``for:``) and
  one where it does not;
* every metric an expression reads is one a real daemon's ``/metrics`` exposes (or a
  recording rule of the file, or node_exporter's / Prometheus's, listed), so renaming a
  metric in ``daemon/`` breaks this test rather than the pager;
* every alert carries what the person paged needs: ``severity``, ``summary``,
  ``description``, and a ``runbook`` that is a section of the README.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.monitoring.support import (
    FOREIGN_METRICS,
    README,
    RULE_TESTS,
    RULES,
    alert_rules,
    load_rules,
    promql_metric_names,
    recorded_names,
    rules_of,
)

SEVERITIES = {"page", "ticket"}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(list(rules_of(load_rules())))} rules found" in done.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files
    done = run(promtool, "test", "rules", *map(str, files))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def _rule_tests() -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for path in sorted(RULE_TESTS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../tradingd.rules.yml"], path
        for test in doc["tests"]:
            checks.extend(test.get("alert_rule_test", []))
    return checks


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    checks = _rule_tests()
    for rule in alert_rules(load_rules()):
        name = rule["alert"]
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no test where it stays quiet"
    unknown = {c["alertname"] for c in checks} - {r["alert"] for r in alert_rules(load_rules())}
    assert not unknown, f"tests of alerts the rules do not have: {unknown}"


def test_every_firing_case_comes_after_the_for_duration() -> None:
    """Each alert's "fires" evaluation is later than its ``for:`` (so ``for:`` is exercised)."""
    fors = {rule["alert"]: _seconds(rule.get("for", "0s")) for rule in alert_rules(load_rules())}
    for check in _rule_tests():
        if check["exp_alerts"]:
            assert _seconds(check["eval_time"]) > fors[check["alertname"]], check


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration))


def test_every_metric_in_the_rules_is_exposed_by_a_real_daemon(exposed: dict[str, str]) -> None:
    doc = load_rules()
    allowed = set(exposed) | recorded_names(doc) | FOREIGN_METRICS
    unknown: dict[str, set[str]] = {}
    for rule in rules_of(doc):
        used = promql_metric_names(rule["expr"])
        assert used, f"no metric found in {rule['expr']!r}"
        if missing := used - allowed:
            unknown[rule.get("alert") or rule["record"]] = missing
    assert not unknown, f"metrics /metrics does not expose: {unknown}"


def test_counters_are_only_read_through_rate_or_increase(exposed: dict[str, str]) -> None:
    """A counter compared raw would page on a restart's reset; these read them as rates."""
    for rule in rules_of(load_rules()):
        for name in promql_metric_names(rule["expr"]):
            if exposed.get(name) == "counter":
                assert re.search(rf"(rate|increase)\(\s*{name}\b", rule["expr"]), (
                    rule.get("alert") or rule.get("record"),
                    name,
                )


def test_each_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in alert_rules(load_rules()):
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        notes = rule.get("annotations", {})
        assert set(notes) == {"summary", "description", "runbook"}, name
        assert notes["runbook"] == f"README.md#{name.lower()}", name
        assert "for" in rule, f"{name}: no for: (a single bad scrape would page)"


def _github_anchor(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_each_runbook_anchor_is_a_readme_heading() -> None:
    anchors = {
        _github_anchor(m.group(1)) for m in re.finditer(r"^#{2,6} (.+)$", README.read_text(), re.M)
    }
    missing = [
        rule["annotations"]["runbook"]
        for rule in alert_rules(load_rules())
        if rule["annotations"]["runbook"].removeprefix("README.md#") not in anchors
    ]
    assert not missing, f"README.md has no section for {missing}"


# --------------------------------------------------------------------------- the name scanner


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="tradingd"} == 0', {"up"}),
        (
            'sum by (job, instance) (rate(a_total{x="y"}[5m])) / on (job) group_left (v) b',
            {"a_total", "b"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(lat_bucket[$__rate_interval])))",
            {"lat_bucket"},
        ),
        ('c{venue=~"$venue", q="or by"} offset 5m and bool d', {"c", "d"}),
        ("1e9 * e_seconds + 0x1F", {"e_seconds"}),
        ("tradingd:rec:rate1m > 0.9 unless ignoring (window) f", {"tradingd:rec:rate1m", "f"}),
        ("time() - timestamp(g) > 3 * h", {"g", "h"}),
        ("max_over_time(i[10m:1m])", {"i"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names
