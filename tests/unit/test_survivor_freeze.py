"""What survives a full collection is frozen out of the next ones; a thaw at most every
``thaw_seconds`` walks everything again, so cyclic garbage among frozen objects is freed
late, never lost for good."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.kit.survivor_freeze import SurvivorFreeze


class Node:
    """An object the cyclic collector tracks, able to point at another."""

    def __init__(self) -> None:
        self.other: Node | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


THAW_SECONDS = 60.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hook(clock: Clock) -> Iterator[SurvivorFreeze]:
    """The hook in the process' collector, thawing every THAW_SECONDS of ``clock``; the
    collector as it was afterwards."""
    gc.unfreeze()
    installed = SurvivorFreeze(THAW_SECONDS, clock)
    gc.callbacks.append(installed)
    try:
        yield installed
    finally:
        gc.callbacks.remove(installed)
        gc.unfreeze()


def tracked(obj: object) -> bool:
    """Whether a collection would walk ``obj`` (frozen objects are out of its sight)."""
    return any(o is obj for o in gc.get_objects())


def cycle() -> tuple[weakref.ref[Node], list[Node]]:
    """Two nodes pointing at each other, held by a list until it is cleared."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), [a, b]


def test_a_full_collections_survivors_are_frozen(hook: SurvivorFreeze):
    survivor = Node()
    assert tracked(survivor)
    frozen_before = gc.get_freeze_count()
    gc.collect()
    assert not tracked(survivor)
    assert gc.get_freeze_count() > frozen_before


def test_younger_collections_freeze_nothing(hook: SurvivorFreeze):
    survivor = Node()
    gc.collect(0)
    gc.collect(1)
    assert tracked(survivor)
    assert gc.get_freeze_count() == 0


def test_a_frozen_object_no_longer_used_is_freed_at_once(hook: SurvivorFreeze):
    obj = Node()
    ref = weakref.ref(obj)
    gc.collect()
    assert not tracked(obj)
    del obj
    assert ref() is None  # reference counting, no collection needed


def test_a_cycle_among_frozen_objects_is_freed_at_the_thaw_not_before(
    hook: SurvivorFreeze, clock: Clock
):
    ref, holder = cycle()
    gc.collect()  # the cycle survives (held) and is frozen
    holder.clear()  # now it is cyclic garbage, out of the collector's sight
    clock.now = THAW_SECONDS - 1
    gc.collect()
    assert ref() is not None, "frozen cyclic garbage is kept until the thaw"
    assert hook.thaws == 0
    clock.now = THAW_SECONDS
    gc.collect()
    assert ref() is None, "the thaw's full collection frees it"
    assert hook.thaws == 1
    # and the thaw's survivors are frozen again
    survivor = Node()
    clock.now = THAW_SECONDS + 1
    gc.collect()
    assert not tracked(survivor)
