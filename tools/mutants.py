"""Mutation run over the documented invariants of ``polly/engine/``, ``polly/caches.py`` (and its log
throttle) and the breaker.

Each mutant breaks one documented invariant in one place: a (file, original snippet, mutated snippet,
tests) entry. The run copies the working tree to a temporary directory once, checks that every
mutant's tests pass there unmutated (the baseline), then for each mutant writes the mutated file,
runs its tests and restores the file. A mutant is

* ``killed`` when its tests fail (or time out) with the mutation applied;
* ``SURVIVED`` when they still pass: the invariant is unguarded;
* ``NOT FOUND`` when its original snippet is not in the file exactly once (the code moved or was
  reworded): the entry must be updated, and the run fails, rather than count it as killed.

The working tree is never written to. Usage (from the repository root)::

    uv run python tools/mutants.py              # every mutant
    uv run python tools/mutants.py --list       # names and invariants only
    uv run python tools/mutants.py dm-window embed-bound   # some, by name

Exit status: 0 when every mutant was found and killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Seconds one mutant's tests may take before the mutant counts as killed (a hang is a failure).
TIMEOUT = 600
INVARIANTS = "tests/polly/engine/test_invariants.py"
VOTES = "tests/polly/engine/test_engine.py -k sqlite"
REPAIRS = "tests/polly/engine/test_repair.py -k not postgres and not mariadb"


@dataclass(frozen=True)
class Mutant:
    name: str
    invariant: str
    file: str
    original: str
    mutated: str
    tests: str  # pytest arguments, split on spaces

    def args(self) -> list[str]:
        return self.tests.split()


MUTANTS = [
    Mutant(
        "dm-window",
        "at most N confirmation DMs in any sliding 60 s window",
        "polly/engine/votes.py",
        "now - self._stamps[0] >= 60.0",
        "now - self._stamps[0] >= 30.0",
        INVARIANTS,
    ),
    Mutant(
        "dm-cap",
        "the DM limiter refuses the (N+1)th DM of a minute",
        "polly/engine/votes.py",
        "if len(self._stamps) >= self._max:",
        "if len(self._stamps) > self._max:",
        INVARIANTS,
    ),
    Mutant(
        "embed-bound",
        "the embed updater's dirty set holds at most max_pending polls",
        "polly/engine/embed_updater.py",
        "if poll_id not in self._dirty and len(self._dirty) >= self._max_pending:",
        "if False:",
        INVARIANTS,
    ),
    Mutant(
        "embed-interval",
        "each poll's embed is edited at most once per interval",
        "polly/engine/embed_updater.py",
        "due = self._last_edit.get(poll_id, 0.0) + self._interval",
        "due = self._last_edit.get(poll_id, 0.0)",
        "tests/polly/engine/test_engine.py -k embed and sqlite",
    ),
    Mutant(
        "repair-no-restore",
        "a repair never restores a vote its user removed after the read",
        "polly/engine/votes.py",
        "if observed_at is not None and self.superseded(event, observed_at):",
        "if False:",
        INVARIANTS,
    ),
    Mutant(
        "repair-read-time",
        "the reconciler tells the vote processor when it read the reactions",
        "polly/engine/reconciler.py",
        "apply_events(read, observed_at=observed_at, inline=True)",
        "apply_events(read, observed_at=None, inline=True)",
        INVARIANTS,
    ),
    Mutant(
        "complete-read-removes",
        "votes are removed only after a complete read of the reactions",
        "polly/engine/repair.py",
        'if complete:\n                events.extend(event("remove"',
        'if True:\n                events.extend(event("remove"',
        REPAIRS,
    ),
    Mutant(
        "change-of-mind-confirmed",
        "a single-choice change of mind is applied only once confirmed",
        "polly/engine/reconciler.py",
        "now - seen[0] >= self._confirm_seconds",
        "now - seen[0] >= 0",
        INVARIANTS,
    ),
    Mutant(
        "single-choice-replace",
        "a single-choice add replaces the user's previous vote",
        "polly/engine/vote_batch.py",
        "        chosen.clear()\n        votes.voted_at.clear()\n",
        "        votes.voted_at.clear()\n",
        VOTES,
    ),
    Mutant(
        "max-choices-cap",
        "a multiple-choice user holds at most max_choices votes",
        "polly/engine/vote_batch.py",
        "len(chosen) >= poll.max_choices",
        "len(chosen) > poll.max_choices",
        VOTES,
    ),
    Mutant(
        "closed-polls-ignored",
        "reactions on a poll past its close time are ignored",
        "polly/engine/vote_batch.py",
        'if poll.status != "active" or poll.close_time <= now:',
        'if poll.status != "active":',
        VOTES,
    ),
    Mutant(
        "idempotent-replay",
        "replaying an add changes nothing",
        "polly/engine/vote_batch.py",
        '    if option in chosen:\n        return "already_recorded"\n',
        "",
        INVARIANTS,
    ),
    Mutant(
        "stale-never-overwrites",
        "an event older than the recorded vote never replaces or removes it",
        "polly/engine/vote_batch.py",
        "return seen is not None and any(",
        "return False and any(",
        "tests/polly/engine/test_vote_batch.py -k stale",
    ),
    Mutant(
        "reconcile-only-adds",
        "a repair's add never replaces a recorded single-choice vote",
        "polly/engine/vote_batch.py",
        "if chosen and command.reconcile:",
        "if False:",
        INVARIANTS,
    ),
    Mutant(
        "remover-bound",
        "the reaction remover holds at most max_pending removals",
        "polly/engine/reactions.py",
        "if removal not in self._pending and len(self._pending) >= self._max_pending:",
        "if False:",
        INVARIANTS,
    ),
    Mutant(
        "rate-gate-retry-after",
        "no call goes into a bucket inside a retry-after Discord gave",
        "polly/engine/rate_gate.py",
        "self._block(bucket, self._now() + err.retry_after_seconds)",
        "self._block(bucket, self._now())",
        "tests/polly/engine/test_rate_gate.py",
    ),
    Mutant(
        "rate-gate-held",
        "a call inside a known window is answered locally",
        "polly/engine/rate_gate.py",
        "        if left > 0:\n            self.held += 1",
        "        if left > 1e9:\n            self.held += 1",
        "tests/polly/engine/test_rate_gate.py",
    ),
    Mutant(
        "rate-gate-bound",
        "the retry-after map holds at most max_buckets buckets",
        "polly/engine/rate_gate.py",
        "if bucket not in self._until and len(self._until) >= self._max:",
        "if False:",
        "tests/polly/engine/test_rate_gate.py",
    ),
    Mutant(
        "cache-size",
        "a BoundedTTLCache holds at most maxsize entries",
        "polly/caches.py",
        "super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)",
        "super().__init__(maxsize=maxsize + 1, ttl=ttl, timer=timer)",
        "tests/polly/test_caches.py",
    ),
    Mutant(
        "cache-ttl",
        "a BoundedTTLCache entry expires ttl seconds after it was written",
        "polly/caches.py",
        "super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)",
        "super().__init__(maxsize=maxsize, ttl=ttl * 2, timer=timer)",
        "tests/polly/test_caches.py",
    ),
    Mutant(
        "failure-window",
        "a failure after the retry window starts a fresh record",
        "polly/caches.py",
        "if record is None or now - record.first_failure > self.retry_window_seconds:",
        "if record is None:",
        "tests/polly/test_caches.py",
    ),
    Mutant(
        "failure-give-up",
        "a key is given up on after max_retries failures in the window",
        "polly/caches.py",
        "return within_window and record.count >= self.max_retries",
        "return within_window and record.count > self.max_retries",
        "tests/polly/test_caches.py",
    ),
    Mutant(
        "log-throttle-threshold",
        "past its threshold in a window, a category is not logged line by line",
        "polly/log_throttle.py",
        "if count <= state.threshold:",
        "if count <= state.threshold + 1:",
        "tests/polly/test_caches.py",
    ),
    Mutant(
        "breaker-threshold",
        "the Redis breaker opens after failure_threshold consecutive failures",
        "polly/redis_breaker.py",
        "self._failures >= self.failure_threshold",
        "self._failures > self.failure_threshold",
        "tests/polly/test_redis_breaker.py",
    ),
    Mutant(
        "breaker-probe-interval",
        "an open breaker lets one trial through per probe interval",
        "polly/redis_breaker.py",
        "self._clock() - self._opened_at >= self.probe_interval_seconds",
        "self._clock() - self._opened_at >= 0",
        "tests/polly/test_redis_breaker.py",
    ),
    Mutant(
        "breaker-trial-reopens",
        "a failed trial reopens the breaker at once",
        "polly/redis_breaker.py",
        "if self._state is BreakerState.HALF_OPEN or (",
        "if False or (",
        "tests/polly/test_redis_breaker.py",
    ),
]


def _pytest(tree: Path, args: list[str]) -> tuple[int | None, str]:
    """Run pytest in ``tree`` (its own ``polly`` first on the path); exit code (None: timed out), tail."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *_split_k(args)]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter running pytest
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return None, "timed out"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def _split_k(args: list[str]) -> list[str]:
    """``-k`` takes the rest of the words as one expression (``-k embed and sqlite``)."""
    if "-k" not in args:
        return args
    at = args.index("-k")
    return [*args[:at], "-k", " ".join(args[at + 1 :])]


def _copy(dest: Path) -> Path:
    tree = dest / "tree"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules", "*.db"
    )
    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    probe = [sys.executable, "-c", "import polly; print(polly.__file__)"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run(probe, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout  # noqa: S603
    if not Path(where.strip()).is_relative_to(tree):
        msg = f"the copy's tests would import polly from {where.strip()}, not from the copy"
        raise SystemExit(msg)
    return tree


def locate(tree: Path, mutant: Mutant) -> str | None:
    """Why ``mutant`` cannot be applied, or ``None``."""
    path = tree / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    found = path.read_text(encoding="utf-8").count(mutant.original)
    if found != 1:
        return f"original snippet found {found} times in {mutant.file} (needs exactly 1): {mutant.original!r}"
    return None


def run(selected: list[Mutant]) -> int:
    results: list[tuple[Mutant, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="polly-mutants-") as tmp:
        tree = _copy(Path(tmp))
        runnable = []
        for mutant in selected:
            problem = locate(tree, mutant)
            if problem is None:
                runnable.append(mutant)
            else:
                results.append((mutant, "NOT FOUND", problem))
        baseline: dict[str, tuple[int | None, str]] = {}
        for tests in sorted({m.tests for m in runnable}):
            baseline[tests] = _pytest(tree, tests.split())
            code, tail = baseline[tests]
            print(f"baseline {tests}: {'pass' if code == 0 else 'FAIL'} ({tail})", flush=True)
        for mutant in runnable:
            code, tail = baseline[mutant.tests]
            if code != 0:
                results.append((mutant, "NO BASELINE", f"its tests fail unmutated: {tail}"))
                continue
            path = tree / mutant.file
            source = path.read_text(encoding="utf-8")
            started = time.monotonic()
            try:
                path.write_text(source.replace(mutant.original, mutant.mutated), encoding="utf-8")
                code, tail = _pytest(tree, mutant.args())
            finally:
                path.write_text(source, encoding="utf-8")
            took = f"{time.monotonic() - started:.0f} s"
            if code is None:
                status, detail = "killed", f"timed out after {TIMEOUT} s"
            elif code == 1:
                status, detail = "killed", f"{tail} ({took})"
            elif code == 0:
                status, detail = "SURVIVED", f"{tail} ({took})"
            else:  # collection or usage error: the mutant broke the import, or the test arguments are wrong
                status, detail = "ERROR", f"pytest exit {code}: {tail} ({took})"
            results.append((mutant, status, detail))
            print(f"{status:>9}  {mutant.name}: {detail}", flush=True)
    return report(results)


def report(results: list[tuple[Mutant, str, str]]) -> int:
    print()
    width = max(len(m.name) for m, _, _ in results)
    order = {m.name: i for i, m in enumerate(MUTANTS)}
    for mutant, status, detail in sorted(results, key=lambda r: order.get(r[0].name, len(order))):
        print(f"{status:>11}  {mutant.name:<{width}}  {mutant.invariant}")
        if status != "killed":
            print(f"{'':>11}  {'':<{width}}  {detail}")
    counts = {s: sum(1 for _, st, _ in results if st == s) for s in ("killed", "SURVIVED")}
    other = len(results) - counts["killed"] - counts["SURVIVED"]
    killed, survived = counts["killed"], counts["SURVIVED"]
    print(f"\n{len(results)} mutants: {killed} killed, {survived} survived, {other} not run")
    return 0 if counts["killed"] == len(results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    options = parser.parse_args()
    if options.list:
        for mutant in MUTANTS:
            print(f"{mutant.name:<26} {mutant.file:<32} {mutant.invariant}")
        return 0
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in options.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(unknown)}; see --list")
    return run([known[n] for n in options.names] if options.names else MUTANTS)


if __name__ == "__main__":
    sys.exit(main())
