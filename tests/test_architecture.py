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


#: What starts work that outlives the call: each use in the instrumentation is one of OWNED_SPOTS.
SPAWNERS = {
    "create_task", "ensure_future", "run_coroutine_threadsafe", "Thread", "Timer", "start_new_thread",
    "call_later", "call_at",
}  # fmt: skip
_PACKAGE = "instrumentation/opentelemetry/instrumentation/polly"
#: (file, enclosing function) -> (the ``self`` attribute the result is stored in, the method of the
#: same class that ends it, how it ends it there: ``await``, ``join`` or ``cancel``, whether its end
#: is observed by a done-callback where it is created). The loop-side work is loop callbacks, not a
#: task: the one scheduled callback is stored and cancelled when the driver ends.
OWNED_SPOTS = {
    (f"{_PACKAGE}/_loop_driver.py", "LoopDriver._slice"): ("_handle", "_end", "cancel", False),
    (f"{_PACKAGE}/_core.py", "Telemetry._start_thread"): ("_thread", "stop", "join", False),
    (f"{_PACKAGE}/_tasks.py", "TaskSignals._tick"): ("_timers", "close", "cancel", False),
}


def _spawns(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every spawning call with the qualified name of its enclosing function (``Class.method.inner``)."""
    found: list[tuple[str, ast.Call]] = []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, (*scope, child.name))
                continue
            if isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name in SPAWNERS:
                    found.append((".".join(scope), child))
            visit(child, scope)

    visit(tree, ())
    return found


def _is_self_attr(node: ast.AST, attr: str) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == attr
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    )


def _aliases(scope: ast.AST, attr: str) -> set[str]:
    """Local names bound to ``self.<attr>`` in ``scope`` (``x = self.attr``, ``a, x = ..., self.attr``)."""
    names: set[str] = set()
    for node in ast.walk(scope):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs: list[tuple[ast.AST, ast.AST]] = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(target.elts, node.value.elts, strict=False))
            names.update(t.id for t, v in pairs if isinstance(t, ast.Name) and _is_self_attr(v, attr))
    return names


def _refers_to(node: ast.AST, attr: str, aliases: set[str]) -> bool:
    return any(
        _is_self_attr(n, attr) or (isinstance(n, ast.Name) and n.id in aliases) for n in ast.walk(node)
    )


def _function(tree: ast.AST, qualname: str) -> ast.AST:
    node = tree
    for part in qualname.split("."):
        node = next(
            c
            for c in ast.walk(node)
            if isinstance(c, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and c.name == part
        )
    return node


def _ownership_faults(
    tree: ast.AST, qualname: str, call: ast.Call, spec: tuple[str, str, str, bool]
) -> list[str]:
    attr, closer, how, observed = spec
    faults: list[str] = []
    creator = _function(tree, qualname)
    stores = [
        n
        for n in ast.walk(creator)
        if isinstance(n, ast.Assign)
        and any(c is call for c in ast.walk(n.value))
        and any(_is_self_attr(t.value if isinstance(t, ast.Subscript) else t, attr) for t in n.targets)
    ]
    if not stores:
        faults.append(f"its result is not stored in self.{attr}")
    results = {t.id for n in stores for t in n.targets if isinstance(t, ast.Name)}
    if observed and not any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "add_done_callback"
        and _refers_to(n.func.value, attr, results)
        for n in ast.walk(creator)
    ):
        faults.append("its end is not observed by a done-callback")
    try:
        ender = _function(tree, f"{qualname.split('.', maxsplit=1)[0]}.{closer}")
    except StopIteration:
        return [*faults, f"{closer}() is missing"]
    aliases = _aliases(ender, attr)
    ends: list[ast.AST]
    if how == "await":
        ends = [n for n in ast.walk(ender) if isinstance(n, ast.Await) and _refers_to(n, attr, aliases)]
    elif how == "cancel":  # the stored handle(s), or what the ender took out of them, are cancelled
        taken = any(_refers_to(n, attr, aliases) for n in ast.walk(ender))
        ends = [n for n in ast.walk(ender) if taken and isinstance(n, ast.Attribute) and n.attr == "cancel"]
    else:
        ends = [
            n
            for n in ast.walk(ender)
            if isinstance(n, ast.Attribute) and n.attr == how and _refers_to(n.value, attr, aliases)
        ]
    if not ends:
        faults.append(f"{closer}() does not {how} self.{attr}")
    return faults


def test_every_task_and_thread_of_the_instrumentation_has_an_owner() -> None:
    """The instrumentation runs inside applications it does not know: every task, thread or loop
    callback it starts is one of OWNED_SPOTS, stored on its owner and awaited (tasks, their end
    observed by a done-callback), joined or cancelled when the owner closes."""
    unlisted: list[str] = []
    faults: list[str] = []
    spots_seen: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "instrumentation").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for qualname, call in _spawns(tree):
            spec = OWNED_SPOTS.get((rel, qualname))
            if spec is None:
                unlisted.append(f"{rel}:{call.lineno} in {qualname or '<module>'}")
                continue
            spots_seen.add((rel, qualname))
            faults.extend(f"{rel}:{call.lineno}: {f}" for f in _ownership_faults(tree, qualname, call, spec))
    assert unlisted == [], "a task, thread or callback outside OWNED_SPOTS (store it, end it at close)"
    assert faults == []
    assert spots_seen == set(OWNED_SPOTS), "an owned spot moved: update OWNED_SPOTS"


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
