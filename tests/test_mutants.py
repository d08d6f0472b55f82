"""The mutation run's entries still match the code they mutate (``tools/mutants.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("polly_mutants_tool", ROOT / "tools" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_to_exactly_one_place() -> None:
    tool = _tool()
    problems = [f"{m.name}: {why}" for m in tool.MUTANTS if (why := tool.locate(ROOT, m)) is not None]
    assert problems == [], "update tools/mutants.py to the code as it is now"


def test_mutants_are_named_once_change_the_code_and_name_existing_tests() -> None:
    tool = _tool()
    names = [m.name for m in tool.MUTANTS]
    assert len(names) == len(set(names))
    assert len(names) >= 11
    for mutant in tool.MUTANTS:
        assert mutant.mutated != mutant.original, mutant.name
        paths = [arg for arg in mutant.args() if arg.startswith("tests/")]
        assert paths, mutant.name
        assert all((ROOT / p).is_file() for p in paths), mutant.name


def test_a_snippet_that_moved_is_reported_and_fails_the_run() -> None:
    tool = _tool()
    moved = tool.Mutant("moved", "an invariant", "polly/engine/votes.py", "no such code", "x", "tests/x.py")
    why = tool.locate(ROOT, moved)
    assert why is not None
    assert "found 0 times in polly/engine/votes.py" in why
    killed = tool.MUTANTS[0]
    assert tool.report([(killed, "killed", "")]) == 0
    assert tool.report([(killed, "killed", ""), (moved, "NOT FOUND", why)]) == 1
