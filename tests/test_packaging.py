"""Two distributions from one workspace: the instrumentation stands alone, polly depends on it."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.instrumentation.wheels import installed, venv, wheel

pytestmark = pytest.mark.slow

ALONE = """
import sys, importlib.metadata as md
import opentelemetry.instrumentation.polly as oip
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.polly import PollyInstrumentor
from opentelemetry.instrumentation.polly.seam import StatsSource
assert issubclass(PollyInstrumentor, BaseInstrumentor)
eps = [e for e in md.entry_points(group="opentelemetry_instrumentor") if e.name == "polly"]
assert eps and eps[0].value == "opentelemetry.instrumentation.polly:PollyInstrumentor", eps
assert eps[0].load() is PollyInstrumentor
assert oip.__version__ == md.version("opentelemetry-instrumentation-polly"), oip.__version__
assert not [m for m in sys.modules if m == "polly" or m.startswith("polly.")]
import opentelemetry.instrumentation, os
assert not os.path.exists(os.path.join(os.path.dirname(oip.__file__), "..", "__init__.py"))
print("ok")
"""

WITH_POLLY = """
import importlib.metadata as md
import polly
from opentelemetry.instrumentation.polly._instrumentor import installed_sources
scripts = [e for e in md.entry_points(group="console_scripts") if e.name == "polly"]
assert scripts and scripts[0].value == "polly.cli:main", scripts
sources = installed_sources()
assert [type(s).__name__ for s in sources] == ["PollyStatsSource"], sources
assert "opentelemetry-instrumentation-polly" in " ".join(md.requires("polly") or [])
print("ok")
"""


def _requires(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]


def test_the_instrumentation_wheel_needs_nothing_of_the_bot() -> None:
    requires = _requires(wheel("opentelemetry_instrumentation_polly"))
    runtime = sorted(
        r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires if "extra ==" not in r
    )
    assert runtime == [
        "opentelemetry-api",
        "opentelemetry-instrumentation",
        "opentelemetry-semantic-conventions",
        "psutil",
    ]
    extras = [r for r in requires if "extra ==" in r]
    assert extras
    assert all("instruments" in r for r in extras)
    with zipfile.ZipFile(wheel("opentelemetry_instrumentation_polly")) as zf:
        names = zf.namelist()
    assert not [n for n in names if n.startswith("polly/")]
    assert "opentelemetry/__init__.py" not in names
    assert "opentelemetry/instrumentation/__init__.py" not in names
    assert "opentelemetry/instrumentation/polly/py.typed" in names


def test_the_instrumentation_installs_alone(tmp_path: Path) -> None:
    python = venv(tmp_path / "venv", wheel("opentelemetry_instrumentation_polly"))
    packages = installed(python)
    assert packages & {"polly", "discord-py", "sqlalchemy", "redis", "psycopg", "click", "pydantic"} == set()
    assert len(packages) <= 12, sorted(packages)
    out = subprocess.run([str(python), "-c", ALONE], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok"


def test_polly_depends_on_the_instrumentation_distribution(tmp_path: Path) -> None:
    polly_wheel = wheel("polly")
    with zipfile.ZipFile(polly_wheel) as zf:
        assert not [n for n in zf.namelist() if n.startswith("opentelemetry/")]  # not carried twice
    assert any(r.startswith("opentelemetry-instrumentation-polly") for r in _requires(polly_wheel))
    python = venv(tmp_path / "venv", polly_wheel, wheel("opentelemetry_instrumentation_polly"))
    out = subprocess.run(
        [str(python), "-c", WITH_POLLY], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "ok"
    version = subprocess.run(
        [str(python.with_name("polly")), "--version"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert version.stdout.startswith("polly, version ")
