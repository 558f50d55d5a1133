"""Freezing what survives a full garbage collection, and thawing it now and then.

A replica's heap is mostly open connections (~64 objects each tracked by the cyclic
collector, 51 of them aiohttp's and asyncio's), and Python's oldest-generation collection
walks all of them each time the heap grew by a quarter since the last one: connecting
10,000 clients to one replica spent 2-3 s of wall time in 12 such walks
(docs/benchmarks.md). Connections are freed by reference counting when they close (the
session cuts the cycles a connection used to leave), so walking the open ones finds
nothing.

After each full collection everything that survived it is frozen (``gc.freeze``): the
next full collection walks only what was made since. Frozen objects are still freed by
reference counting the moment they are no longer used; only an object that becomes
*cyclic* garbage while frozen waits, until the thaw: the first full collection once
``thaw_seconds`` have passed since the last thaw unfreezes everything first and walks it
all, as Python would, then freezes the survivors again. A cycle the kit does not cut
therefore costs memory for about that long, never for good.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["SurvivorFreeze", "freezing_survivors"]

#: the generation a full collection reports (gc.callbacks' info["generation"])
OLDEST_GENERATION = 2


class SurvivorFreeze:
    """A ``gc.callbacks`` hook: freeze after each full collection, thaw before one at most
    every ``thaw_seconds``."""

    __slots__ = ("_clock", "_thaw_seconds", "_thawed_at", "thaws")

    def __init__(self, thaw_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._thaw_seconds = thaw_seconds
        self._clock = clock
        self._thawed_at = clock()
        #: full collections that walked everything, frozen objects included
        self.thaws = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != OLDEST_GENERATION:
            return
        if phase == "start":
            now = self._clock()
            if now - self._thawed_at >= self._thaw_seconds:
                # back into the oldest generation, which this collection is about to walk
                gc.unfreeze()
                self._thawed_at = now
                self.thaws += 1
        else:
            gc.freeze()


@contextlib.contextmanager
def freezing_survivors(thaw_seconds: float) -> Iterator[SurvivorFreeze]:
    """Freeze full collections' survivors while the block runs (a replica's life)."""
    hook = SurvivorFreeze(thaw_seconds)
    gc.callbacks.append(hook)
    try:
        yield hook
    finally:
        gc.callbacks.remove(hook)
