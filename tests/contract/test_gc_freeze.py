"""WWWS_GC_FREEZE: once a replica listens, what start-up left alive is frozen out of the
cyclic collector (gc.freeze), by default, and so is what survives each full collection
while it serves (thawed every WWWS_GC_THAW_SECONDS); WWWS_GC_FREEZE=0 leaves all of it in,
WWWS_GC_THAW_SECONDS=0 freezes start-up only."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from replicas import make_settings, served

from services.chat.app import create_app as create_chat
from services.kit.survivor_freeze import SurvivorFreeze


@dataclass(frozen=True)
class Listening:
    """What a replica's garbage collection looked like while it listened."""

    frozen: int
    survivor_hooks: int


async def frozen_once_listening(gc_freeze: bool, **overrides: object) -> Listening:
    gc.unfreeze()
    async with served(create_chat, "chat", gc_freeze=gc_freeze, **overrides):
        seen = Listening(
            frozen=gc.get_freeze_count(),
            survivor_hooks=sum(isinstance(hook, SurvivorFreeze) for hook in gc.callbacks),
        )
    assert not any(isinstance(hook, SurvivorFreeze) for hook in gc.callbacks), (
        "a stopped replica leaves the process' collector as it found it"
    )
    return seen


async def test_the_start_up_objects_and_full_collections_survivors_are_frozen_by_default():
    assert make_settings("chat").gc_freeze
    seen = await frozen_once_listening(gc_freeze=True)
    assert seen.frozen > 1000
    assert seen.survivor_hooks == 1


async def test_start_up_only_when_the_thaw_is_zero():
    seen = await frozen_once_listening(gc_freeze=True, gc_thaw_seconds=0.0)
    assert seen.frozen > 1000
    assert seen.survivor_hooks == 0


async def test_nothing_is_frozen_when_turned_off():
    seen = await frozen_once_listening(gc_freeze=False)
    assert seen.frozen == 0
    assert seen.survivor_hooks == 0
