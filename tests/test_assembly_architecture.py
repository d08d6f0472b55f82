"""The assembly rules: one place builds the process's resources, and the upstream-compatibility
modules are leaves (they use polly; nothing of polly uses them)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from tests.test_architecture import ROOT, _imports

COMPAT = ("polly.database", "polly.redis_client", "polly.background_tasks", "polly.memory_utils")
Modules = Iterable[tuple[str, Path]]
#: the in-process soak stands for several replica processes at once: one Database each, as each
#: process has (its crash mode runs real processes, which open the app like any polly process)
SOAK = "polly.sandbox.soak"


def _polly_modules() -> list[tuple[str, Path]]:
    return [
        (".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), p)
        for p in sorted((ROOT / "polly").rglob("*.py"))
    ]


def _imported(path: Path) -> set[str]:
    """Imported module names, with ``from polly import x`` read as ``polly.x``."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "polly" and node.level == 0:
            names.update(f"polly.{alias.name}" for alias in node.names)
    return names


def leaf_violations(modules: Modules) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, path in modules
        if module not in COMPAT
        for name in _imported(path)
        if name in COMPAT
    ]


def database_builders(modules: Modules) -> list[str]:
    return [
        f"{module}:{node.lineno}"
        for module, path in modules
        if module not in ("polly.app", SOAK) and not module.startswith("polly.db.")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Database"
    ]


def test_compatibility_modules_are_leaves() -> None:
    assert leaf_violations(_polly_modules()) == []


def test_only_the_app_and_the_db_package_build_a_database() -> None:
    """A second ``Database`` is a second pool: only :mod:`polly.app` (and :mod:`polly.db`'s own
    process-wide holder, which the app configures) construct one; the in-process soak is the one
    harness that simulates several processes."""
    assert database_builders(_polly_modules()) == []


def test_the_rule_scanners_see_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from polly import database\nfrom polly.db.engine import Database\nDatabase(None)\n")
    assert leaf_violations([("polly.engine.probe", probe)]) == ["polly.engine.probe imports polly.database"]
    assert database_builders([("polly.engine.probe", probe)]) == ["polly.engine.probe:3"]
    assert leaf_violations([("polly.background_tasks", probe)]) == []  # compat may use compat
    assert database_builders([("polly.app", probe)]) == []
