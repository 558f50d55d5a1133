"""Deadlines sharing one loop timer per slot: never early, cancellable, re-armable."""

from __future__ import annotations

import asyncio

from services.kit.deadlines import Deadlines


async def test_deadlines_fire_once_not_before_they_are_due_and_share_timers():
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, int, float]] = []
    deadlines: Deadlines[str] = Deadlines(
        lambda item, stage: fired.append((item, stage, loop.time())), resolution=0.1
    )
    start = loop.time()
    for n in range(50):  # 50 deadlines in (at most) two slots
        deadlines.set(f"c{n}", 0.15, stage=1)
    deadlines.set("late", 0.3, stage=2)
    assert len(deadlines) == 51 and len(deadlines._timers) <= 3
    await asyncio.sleep(0.5)
    assert sorted(item for item, _, _ in fired) == sorted([f"c{n}" for n in range(50)] + ["late"])
    assert all(
        at - start >= due for item, _, at in fired for due in [0.3 if item == "late" else 0.15]
    )
    assert {stage for item, stage, _ in fired if item != "late"} == {1}
    assert len(deadlines) == 0 and deadlines._timers == {} and deadlines._slots == {}


async def test_a_cancelled_or_replaced_deadline_does_not_fire_and_frees_its_timer():
    fired: list[tuple[str, int]] = []
    deadlines: Deadlines[str] = Deadlines(lambda item, stage: fired.append((item, stage)), 0.05)
    deadlines.set("a", 0.05)
    deadlines.cancel("a")
    assert deadlines._timers == {}
    deadlines.set("b", 0.05, stage=0)
    deadlines.set("b", 0.15, stage=1)  # replaced: only the second one comes
    await asyncio.sleep(0.3)
    assert fired == [("b", 1)]


async def test_a_callback_may_set_the_next_deadline_of_its_item_and_errors_are_contained():
    fired: list[tuple[str, int]] = []
    deadlines: Deadlines[str] = Deadlines(lambda item, stage: None, 0.05)

    def due(item: str, stage: int) -> None:
        fired.append((item, stage))
        if item == "boom":
            raise RuntimeError("a failing callback")
        if stage == 0:
            deadlines.set(item, 0.05, stage=1)  # the notice, then the close

    deadlines._due = due
    deadlines.set("boom", 0.05)
    deadlines.set("conn", 0.05)
    await asyncio.sleep(0.3)
    assert fired.count(("conn", 0)) == 1 and ("conn", 1) in fired and len(deadlines) == 0
