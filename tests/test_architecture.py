"""The layout rules: dependencies point one way and the namespace folders stay namespaces."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_polly_never_imports_opentelemetry() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "polly").rglob("*.py"))
        for name in _imports(path)
        if name == "opentelemetry" or name.startswith("opentelemetry.")
    ]
    assert offenders == []


def test_instrumentation_never_imports_polly() -> None:
    """The instrumentation is its own distribution: polly reaches it only through the seam."""
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "instrumentation").rglob("*.py"))
        for name in _imports(path)
        if name == "polly" or name.startswith("polly.")
    ]
    assert offenders == []


def test_namespace_folders_have_no_init() -> None:
    for folder in ("instrumentation/opentelemetry", "instrumentation/opentelemetry/instrumentation"):
        assert (ROOT / folder).is_dir()
        assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/__init__.py shadows opentelemetry"


def test_both_packages_are_typed() -> None:
    assert (ROOT / "polly" / "py.typed").is_file()
    assert (ROOT / "instrumentation/opentelemetry/instrumentation/polly/py.typed").is_file()


def test_no_bare_create_task_in_polly() -> None:
    """Every task has an owner: only the supervisor may create tasks."""
    offenders: list[str] = []
    for path in sorted((ROOT / "polly").rglob("*.py")):
        if path.name == "supervisor.py":
            continue
        offenders.extend(
            f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Attribute) and node.attr in ("create_task", "ensure_future")
        )
    assert offenders == []


def test_nothing_reads_the_shared_folder() -> None:
    marker = "../" + "shared"
    offenders = [
        str(path.relative_to(ROOT))
        for top in ("polly", "instrumentation", "tests", "benchmarks", ".ci")
        if (ROOT / top).exists()
        for path in (ROOT / top).rglob("*")
        if path.is_file() and path.suffix in {".py", ".sh", ""} and marker in path.read_text(errors="ignore")
    ]
    assert offenders == []
