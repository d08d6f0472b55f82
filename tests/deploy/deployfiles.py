"""The queries deploy/ runs: alert expressions and Grafana panel and variable queries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "polly.rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
METRICS_DOC_ENV = "POLLY_TEST_METRICS_DOC"


def alert_rules() -> list[tuple[str, str]]:
    """(alert name, PromQL expression) of every rule in the rules file."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_panels(panel.get("panels", [])))
    return flat


def dashboard_panels(path: Path) -> list[tuple[str, list[str]]]:
    """(panel title, its PromQL targets) for every panel of a dashboard that is not a row."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return [
        (panel["title"], [t["expr"] for t in panel.get("targets", []) if t.get("expr")])
        for panel in _panels(dashboard["panels"])
        if panel.get("type") != "row"
    ]


def dashboard_variables(path: Path) -> list[tuple[str, str]]:
    """(variable name, the series selector inside its ``label_values(...)`` query)."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*", query, re.DOTALL)
        if match is None:
            msg = f"variable {var['name']}: only label_values(<selector>, <label>) is supported: {query!r}"
            raise ValueError(msg)
        found.append((var["name"], match.group(1)))
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, query) for every panel target and variable of every dashboard."""
    queries: list[tuple[str, str]] = []
    for path in DASHBOARDS:
        for title, exprs in dashboard_panels(path):
            queries.extend((f"{path.name}: {title} [{i}]", expr) for i, expr in enumerate(exprs))
        queries.extend((f"{path.name}: ${name}", selector) for name, selector in dashboard_variables(path))
    return queries
