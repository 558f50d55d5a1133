"""Many deadlines with one loop timer per slot of time they fall in, not one per item.

A timer per connection (``loop.call_later``) costs a handle, its arguments, a copy of the
context and, on uvloop, a libuv timer: about 0.6 KiB of a replica's memory per idle
connection (bench, idle scenario). Here deadlines falling in the same ``resolution``-long
slot of the loop's clock share one timer. A deadline fires at the end of its slot: never
before it is due, at most ``resolution`` after.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Hashable)


class Deadlines(Generic[T]):
    """At most one pending deadline per item; ``due(item, stage)`` is called when it
    comes (``stage``: whatever the caller set it with)."""

    def __init__(self, due: Callable[[T, int], None], resolution: float = 1.0) -> None:
        self._due = due
        self._resolution = resolution
        self._slots: dict[int, dict[T, int]] = {}  # slot -> item -> stage
        self._slot_of: dict[T, int] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def set(self, item: T, delay: float, stage: int = 0) -> None:
        """Call ``due(item, stage)`` in ``delay`` seconds (replacing its pending one)."""
        self.cancel(item)
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + max(0.0, delay)) / self._resolution)
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = {}
            self._timers[slot] = loop.call_at(slot * self._resolution, self._fire, slot)
        items[item] = stage
        self._slot_of[item] = slot

    def cancel(self, item: T) -> None:
        slot = self._slot_of.pop(item, None)
        if slot is None:
            return
        items = self._slots[slot]
        del items[item]
        if not items:
            del self._slots[slot]
            self._timers.pop(slot).cancel()

    def __len__(self) -> int:
        return len(self._slot_of)

    def _fire(self, slot: int) -> None:
        self._timers.pop(slot, None)
        items = self._slots.pop(slot, {})
        for item in items:
            del self._slot_of[item]
        for item, stage in items.items():  # a callback may set the item's next deadline
            try:
                self._due(item, stage)
            except Exception:
                log.exception("a deadline's callback failed")
