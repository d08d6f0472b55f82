"""deploy/'s files parse, the compose file is valid Compose, and the stack keeps its promises.

Promises: pinned images, health checks, named volumes, published ports on loopback unless the
operator says otherwise, every ``${VAR}`` the compose file reads documented in ``.env.example``,
an image that installs from the lockfile and runs as a non-root user, and a systemd unit that waits
longer than polly's shutdown deadline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev group; used for one call
import pytest
import yaml

from polly.config import OTEL_ENV, UPSTREAM_ENV, EngineSettings
from tests.deploy.deployfiles import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.schema.json"
LOOPBACK_BIND = "${BIND_ADDRESS:-127.0.0.1}:"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml", ".json"}),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    assert isinstance(doc, dict), f"{path} is not a mapping"
    assert doc, f"{path} is empty"


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(_compose())


def test_compose_schema_check_can_fail() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = _compose()
    broken["services"]["polly"]["healthcheck"]["interval"] = {"seconds": 30}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_compose_has_the_whole_stack_with_pinned_images() -> None:
    services = _compose()["services"]
    assert set(services) == {"polly", "postgres", "redis", "otel-collector", "prometheus", "grafana"}
    assert "opentelemetry-collector-contrib" in services["otel-collector"]["image"]
    for name, service in services.items():
        if name == "polly":
            assert "build" in service
            continue
        image = service["image"]
        tag = image.rpartition(":")[2]
        assert ":" in image, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_compose_health_checks_and_named_volumes() -> None:
    doc = _compose()
    services = doc["services"]
    # The collector image has no shell or HTTP client to probe with (documented in compose.yaml).
    for name in ("polly", "postgres", "redis", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    named = set(doc["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("./") or source in named, (
                f"{name}: {volume} is neither a config file nor named"
            )
    assert {"postgres-data", "redis-data", "prometheus-data", "grafana-data"} <= named


def test_published_ports_bind_to_loopback_by_default() -> None:
    ports = [(name, p) for name, s in _compose()["services"].items() for p in s.get("ports", [])]
    assert ports, "nothing is published"
    for name, port in ports:
        assert isinstance(port, str), f"{name}: {port} is not in HOST:HOST_PORT:PORT form"
        assert port.startswith(LOOPBACK_BIND), f"{name}: {port} may bind to all addresses"
    assert "postgres" not in {name for name, _ in ports}
    assert "redis" not in {name for name, _ in ports}
    assert _env_example()["BIND_ADDRESS"] == "127.0.0.1"


def test_env_example_documents_every_variable_and_nothing_unknown() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    documented = _env_example()
    assert used - set(documented) == set(), "compose.yaml reads variables .env.example does not document"
    known = set(UPSTREAM_ENV) | set(OTEL_ENV)
    for key in set(documented) - used:
        assert key in known or key.startswith("POLLY_"), f".env.example: {key} is read by nothing"
    commented = False  # a comment since the last blank line documents the lines below it
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            commented = False
        elif line.startswith("#"):
            commented = True
        else:
            assert commented, f".env.example: {line!r} has no comment above it"
    secrets = ("DISCORD_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
    assert all(documented[key] == "" for key in secrets), "the example must not ship a secret"


def test_dockerfile_is_multi_stage_locked_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 3
    assert re.search(r"uv sync --locked", text)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^CMD \["polly", "run"\]', text, re.MULTILINE)


def _unit() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / "systemd" / "polly.service").read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), value.strip())
    return values


def test_systemd_unit_is_hardened_and_outwaits_the_shutdown_deadline() -> None:
    unit = _unit()
    assert unit["Restart"] == "on-failure"
    assert unit["ProtectSystem"] == "strict"
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["EnvironmentFile"].startswith("/etc/")
    assert unit.get("User") not in {None, "root"} or unit.get("DynamicUser") == "yes"
    default_deadline = EngineSettings().shutdown_timeout_seconds
    assert float(unit["TimeoutStopSec"]) > default_deadline + 5


def test_systemd_unit_verifies() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(DEPLOY / "systemd" / "polly.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # The unit names the installed path, which a checkout does not have.
        if line.strip() and "is not executable" not in line and "/opt/polly" not in line
    ]
    assert problems == []
