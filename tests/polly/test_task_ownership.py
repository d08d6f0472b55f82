"""Every task of a running polly has an owner: in a sandbox run with telemetry on, each asyncio task
of the process is the supervisor's host, one of its loops, or the caller's own task (nothing started
with ``loop.create_task`` behind its back, the instrumentation's loop-side work included). A task
seen only once in two looks a second apart is a short-lived child a loop awaits (``gather`` of
concurrent reaction removals), not a task of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from polly.config import load_settings
from polly.engine.runner import RunOptions, run
from polly.stats import TaskStats
from polly.stats import registry as stats_registry


async def test_a_running_sandbox_has_no_task_without_an_owner(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "DATABASE_URL": f"sqlite:///{tmp_path}/own.db",
            "POLLY_REDIS__ENABLED": "false",
            "POLLY_WEB__ENABLED": "false",
        },
        cwd=tmp_path,
    )
    assert settings.general.monitoring.enabled  # telemetry on, as by default
    seen: dict[str, set[str]] = {}

    looks: list[set[asyncio.Task[object]]] = []

    def look() -> None:
        looks.append(set(asyncio.all_tasks()))
        if len(looks) < 2:
            return
        lasting = looks[0] & looks[1]
        seen["tasks"] = {t.get_name() for t in lasting}
        seen["coros"] = {f"{t.get_name()}={t.get_coro()!r}" for t in lasting}
        stats = [s for s in stats_registry.collect("tasks") if isinstance(s, TaskStats)]
        seen["supervised"] = {name for s in stats for name, _ in s.live_by_name}

    asyncio.get_running_loop().call_later(2.5, look)
    asyncio.get_running_loop().call_later(3.5, look)
    me = asyncio.current_task()
    assert me is not None
    await run(settings, RunOptions(sandbox=True, duration_seconds=5.0, seed_polls=2, voters=5))
    assert seen, "the run ended before it was looked at"
    assert "telemetry" in seen["supervised"]
    unowned = seen["tasks"] - seen["supervised"] - {me.get_name(), "polly:supervisor"}
    assert unowned == set(), seen["coros"]
