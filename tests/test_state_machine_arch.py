"""One poll state machine, one row decoder: nothing outside their modules writes a poll's status or
claim, and the names they own are defined once."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLLY = ROOT / "polly"
STATE_MACHINE = POLLY / "db" / "transitions.py"
#: The columns only the state machine writes in an UPDATE.
STATE_COLUMNS = {"status", "message_id"}
#: Raw SQL that writes them.
SQL_WRITE = re.compile(
    r"\bUPDATE\s+\W?polls\W?\s+SET\b[^;]*\b(status|message_id)\b", re.IGNORECASE | re.DOTALL
)


def _trees(root: Path = POLLY) -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(root.rglob("*.py")):
        yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def state_writes(where: str, tree: ast.AST) -> list[str]:
    """Places in ``tree`` that write a poll's status or claim."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            keys = {k.arg for k in node.keywords if k.arg is not None}
            for arg in node.args:  # .values({"status": ...})
                if isinstance(arg, ast.Dict):
                    keys |= {
                        k.value for k in arg.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
                    }
            found += [f"{where}:{node.lineno}: .values({k}=...)" for k in sorted(keys & STATE_COLUMNS)]
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [
                f"{where}:{node.lineno}: {ast.unparse(t)} = ..."
                for t in targets
                if isinstance(t, ast.Attribute)
                and t.attr in STATE_COLUMNS
                and not (isinstance(t.value, ast.Name) and t.value.id == "self")
            ]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_WRITE.search(node.value):
            found.append(f"{where}:{node.lineno}: raw SQL UPDATE of polls")
    return found


def test_only_the_state_machine_writes_status_and_claims() -> None:
    offenders = [
        hit
        for where, tree in _trees()
        if where != str(STATE_MACHINE.relative_to(ROOT))
        for hit in state_writes(where, tree)
    ]
    assert offenders == []


def test_the_scan_finds_each_kind_of_write() -> None:
    """The rule above would catch a transition written anywhere else."""
    source = """
update(Poll).where(Poll.id == 1).values(status="closed")
update(Poll).values({"message_id": None})
poll.status = "active"
row.message_id = "claim:x:1"
session.execute(text("UPDATE polls SET status = 'closed' WHERE id = 1"))
self.status = 404  # an HTTP status, not a poll's
update(Poll).values(name="x")
"""
    hits = state_writes("sample.py", ast.parse(source))
    assert sorted(int(h.split(":")[1]) for h in hits) == [2, 3, 4, 5, 6]
    assert STATE_MACHINE.is_file()
    assert state_writes("transitions.py", ast.parse(STATE_MACHINE.read_text(encoding="utf-8")))


def _definitions(name: str) -> list[str]:
    """Modules of polly that define ``name`` (a class, function or module-level assignment)."""
    out = []
    for where, tree in _trees():
        assert isinstance(tree, ast.Module)
        for node in tree.body:
            named = (
                isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
            )
            assigned = isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.lstrip("_") == name for t in node.targets
            )
            if named or assigned:
                out.append(where)
    return out


def test_each_name_has_one_home() -> None:
    homes = {
        "CorruptPollError": ["polly/errors.py"],
        "CLAIM_PREFIX": ["polly/db/transitions.py"],
        "claim_token": ["polly/db/transitions.py"],
        "LOAD_ERRORS": ["polly/db/poll_rows.py"],
        "poll_view": ["polly/db/poll_rows.py"],
        "PollView": ["polly/db/poll_rows.py"],
        "load_tolerant": ["polly/db/queries.py"],
        "iter_polls": ["polly/db/queries.py"],
        "iter_polls_sync": ["polly/db/queries.py"],
    }
    assert {name: _definitions(name) for name in homes} == homes


def test_the_claim_prefix_is_spelled_in_one_place() -> None:
    spelled = [
        where
        for where, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("claim:")
    ]
    assert spelled == ["polly/db/transitions.py"]
