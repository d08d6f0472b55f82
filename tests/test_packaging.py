"""One wheel carries both packages, and the real opentelemetry.instrumentation still imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.metadata as md
import polly, opentelemetry.instrumentation.polly as oip
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.polly import PollyInstrumentor
assert issubclass(PollyInstrumentor, BaseInstrumentor)
eps = [e for e in md.entry_points(group="opentelemetry_instrumentor") if e.name == "polly"]
assert eps and eps[0].value == "opentelemetry.instrumentation.polly:PollyInstrumentor", eps
assert eps[0].load() is PollyInstrumentor
scripts = [e for e in md.entry_points(group="console_scripts") if e.name == "polly"]
assert scripts and scripts[0].value == "polly.cli:main", scripts
import opentelemetry.instrumentation, os
assert not os.path.exists(os.path.join(os.path.dirname(oip.__file__), "..", "__init__.py"))
print("ok")
"""


@pytest.mark.slow
def test_one_wheel_installs_both_packages(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True
    )
    wheels = list(dist.glob("polly-*.whl"))
    assert len(wheels) == 1
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), str(wheels[0])], check=True, capture_output=True
    )
    out = subprocess.run([str(python), "-c", CHECK], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok"
    polly = subprocess.run(
        [str(venv / "bin" / "polly"), "--version"], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert polly.stdout.startswith("polly, version ")
