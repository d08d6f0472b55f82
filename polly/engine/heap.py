"""The start-up heap, frozen while the vote path runs, so full collections stop walking it.

A running polly holds some 90 000 gc-tracked objects that live as long as the process: modules,
classes, the ORM's mappers and compiled-statement caches, settings, the Discord client. A
generation-2 collection walks all of them; on a loaded 2-core machine that is a 60 to 300 ms pause
of the event loop (measured with ``benchmarks/vote_throughput.py``), during which no vote commits
and the gateway's heartbeat waits.

:func:`freeze_startup_heap` runs one full collection (the garbage of start-up is freed, not frozen)
and moves every surviving object into the interpreter's permanent generation (:func:`gc.freeze`),
which collections skip; later collections walk only what was allocated since. :func:`thaw` undoes
it. The freeze is shared by everything in the process that holds it: the first holder freezes, the
last one to let go unfreezes, so a process that stops its engine (a test, an in-process restart)
gets every frozen object back into normal collection and nothing stays frozen for good.

What the running process builds once and keeps (compiled statements, caches filled by the first
batches) is allocated after that freeze; :func:`refreeze`, called by the vote path a bounded number
of times once it has warmed up, collects and freezes again, so full collections keep walking only
what is young. Refcounting still frees frozen objects; only cyclic garbage frozen this way waits
for the thaw.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["freeze_startup_heap", "frozen_holders", "refreeze", "thaw"]

_lock = threading.Lock()
_holders = 0


def freeze_startup_heap() -> None:
    """Hold the freeze: the first holder collects and freezes the heap; later ones only count."""
    global _holders  # noqa: PLW0603 - one process-wide count, guarded by the lock
    with _lock:
        _holders += 1
        if _holders == 1:
            gc.collect()
            gc.freeze()


def refreeze() -> bool:
    """While the freeze is held: one full collection, then freeze what survived. ``True`` if done."""
    with _lock:
        if _holders == 0:
            return False
        gc.collect()
        gc.freeze()
        return True


def thaw() -> None:
    """Let go of the freeze; the last holder unfreezes (frozen objects are collectable again)."""
    global _holders  # noqa: PLW0603 - one process-wide count, guarded by the lock
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()


def frozen_holders() -> int:
    """How many holders keep the heap frozen now."""
    return _holders
