"""Building the two wheels once per test session, and clean venvs installed from the registry."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.skip("uv is not on PATH")
    return found


@functools.cache
def _build() -> Path:
    out = Path(tempfile.mkdtemp(prefix="polly-wheels-"))
    subprocess.run(
        [uv(), "build", "--all-packages", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return out


def wheel(distribution: str) -> Path:
    """The built wheel of ``distribution`` (``polly`` or ``opentelemetry_instrumentation_polly``)."""
    found = sorted(_build().glob(f"{distribution}-*.whl"))
    assert len(found) == 1, f"{distribution}: {found}"
    return found[0]


def venv(where: Path, *requirements: str | Path, python: str = sys.executable) -> Path:
    """A fresh venv at ``where`` with ``requirements`` (from the registry, or wheel paths); its python."""
    subprocess.run([uv(), "venv", "--quiet", "--python", python, str(where)], check=True, capture_output=True)
    interpreter = where / "bin" / "python"
    result = subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", str(interpreter), *map(str, requirements)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return interpreter


def installed(interpreter: Path) -> set[str]:
    """Normalised names of the distributions installed for ``interpreter``."""
    out = subprocess.run(
        [uv(), "pip", "freeze", "--python", str(interpreter)], check=True, capture_output=True, text=True
    ).stdout
    names = set()
    for line in out.splitlines():
        name = line.split("==")[0].split(" @ ")[0].strip().lower().replace("_", "-").replace(".", "-")
        if name:
            names.add(name)
    return names
