"""Every metric an alert or a dashboard queries is one docs/metrics.md lists, with its documented labels.

A renamed metric or attribute in the instrumentation breaks this test until deploy/ follows. Names
are mapped through the collector's Prometheus translation (tests/deploy/promnames.py).
"""

from __future__ import annotations

import re

import pytest

from tests.deploy.deployfiles import alert_rules, dashboard_queries
from tests.deploy.promnames import BUILTIN_SERIES, MetricSpec, label_name, selectors, series_index

#: Labels every series has or PromQL makes: the scrape's, the histogram bucket's, the scope's.
COMMON_LABELS = frozenset({"job", "instance", "le", "__name__", "otel_scope_name", "otel_scope_version"})
QUERIES = [(f"alert {name}", expr) for name, expr in alert_rules()] + dashboard_queries()


def _labels(spec: MetricSpec) -> set[str]:
    return {label_name(a) for a in spec.attributes} | COMMON_LABELS


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_uses_documented_metrics_and_labels(
    where: str, expr: str, metric_specs: list[MetricSpec]
) -> None:
    index = series_index(metric_specs)
    found = selectors(expr)
    assert found, f"{where}: no metric selector found in {expr!r}"
    used: list[MetricSpec] = []
    for selector in found:
        assert selector.name is not None, f"{where}: selector without a metric name: {selector.text}"
        if selector.name in BUILTIN_SERIES:
            continue
        assert selector.name in index, (
            f"{where}: {selector.name} is not a metric docs/metrics.md lists "
            f"(known: {', '.join(sorted(index))})"
        )
        spec = index[selector.name]
        used.append(spec)
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector.matchers):
            assert label in _labels(spec), f"{where}: {spec.name} has no attribute for label {label!r}"
    allowed = set().union(*(_labels(s) for s in used)) if used else set(COMMON_LABELS)
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            assert label in allowed, f"{where}: groups by {label!r}, which none of its metrics has"


def test_a_renamed_metric_is_caught(metric_specs: list[MetricSpec]) -> None:
    renamed = [
        MetricSpec(s.name + ".renamed", s.kind, s.unit, s.attributes)
        if s.name == "process.memory.usage"
        else s
        for s in metric_specs
    ]
    index = series_index(renamed)
    used = {sel.name for _, expr in QUERIES for sel in selectors(expr)}
    assert "process_memory_usage_bytes" in used
    assert "process_memory_usage_bytes" not in index


def _alert_annotations() -> list[tuple[str, str, str]]:
    import yaml

    from tests.deploy.deployfiles import RULES

    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        (rule["alert"], rule["expr"], text)
        for group in doc["groups"]
        for rule in group["rules"]
        for text in rule.get("annotations", {}).values()
    ]


@pytest.mark.parametrize(("alert", "expr", "text"), _alert_annotations())
def test_alert_annotations_name_labels_the_alert_has(
    alert: str, expr: str, text: str, metric_specs: list[MetricSpec]
) -> None:
    index = series_index(metric_specs)
    specs = [index[s.name] for s in selectors(expr) if s.name in index]
    labels = set().union(*(_labels(s) for s in specs))
    for label in re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text):
        assert label in labels, f"{alert}: its annotation names {label!r}, which its metrics do not have"


def test_direct_scrape_example_renames_what_the_sdk_names_differently(metric_specs: list[MetricSpec]) -> None:
    """The commented `polly` job in prometheus.yml relabels exactly the SDK/collector name differences."""
    import yaml

    from tests.deploy.deployfiles import DEPLOY
    from tests.deploy.promnames import sdk_renames

    lines = (DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - job_name: polly")
    block = [line.replace("#", "", 1) for line in lines[start:] if line.strip().startswith("#")]
    job = yaml.safe_load("\n".join(block))[0]
    renames = {r["regex"]: r["replacement"] for r in job.get("metric_relabel_configs", [])}
    assert renames == sdk_renames(metric_specs)
