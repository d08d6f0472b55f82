"""promtool accepts the Prometheus config and rules, and the rules' unit tests pass.

Every alert has a unit test in which it fires and a case in which it must not (an empty
``exp_alerts`` at some time, or input series the expected alerts leave out).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deployfiles import DEPLOY, RULE_TESTS, RULES, alert_rules


def _run(promtool: str, *args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_config(promtool: str) -> None:
    result = _run(promtool, "check", "config", "prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "polly.rules.yml" in result.stdout + result.stderr, "the config does not load the rules"


def test_promtool_check_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    assert RULE_TESTS, "no rule tests in deploy/prometheus/tests"
    result = _run(promtool, "test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_can_fail(promtool: str, tmp_path: Path) -> None:
    """The same tests against rules that never fire must fail (the tests assert something)."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = f"({rule['expr']}) and on() vector(0) == 1"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(rules), encoding="utf-8")
    (tmp_path / "tests").mkdir()
    for test in RULE_TESTS:
        (tmp_path / "tests" / test.name).write_text(test.read_text(encoding="utf-8"), encoding="utf-8")
    result = _run(promtool, "test", "rules", *(f"tests/{p.name}" for p in RULE_TESTS), cwd=tmp_path)
    assert result.returncode != 0


def _cases() -> dict[str, tuple[int, int]]:
    """alert → (firing cases, must-not cases) over every rule test file."""
    cases = {name: (0, 0) for name, _ in alert_rules()}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            series = len(test.get("input_series", []))
            for check in test.get("alert_rule_test", []):
                fired, quiet = cases[check["alertname"]]
                expected = check.get("exp_alerts") or []
                fired += bool(expected)
                quiet += (not expected) or len(expected) < series
                cases[check["alertname"]] = (fired, quiet)
    return cases


@pytest.mark.parametrize("alert", [name for name, _ in alert_rules()])
def test_every_alert_has_a_firing_and_a_quiet_case(alert: str) -> None:
    fired, quiet = _cases()[alert]
    assert fired >= 1, f"{alert}: no test where it fires"
    assert quiet >= 1, f"{alert}: no test where it must stay quiet"
