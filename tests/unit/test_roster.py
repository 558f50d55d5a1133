"""Rosters on the memory backplane with a fake clock: no sleeping, time moves by hand."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeClock, FakeConnection

from services.kit.backplane import MemoryBackplane, MemoryState
from services.kit.hub import ChannelHub
from services.kit.roster import Roster

TTL = 60.0


class Replica:
    """One replica's roster for a service, recording what its listeners are told."""

    def __init__(self, state: MemoryState, node: str, service: str = "chat") -> None:
        backplane = MemoryBackplane(state)
        self.told: list[tuple[str, str, str, bool]] = []  # (listener id, group, user, present)
        self.roster = Roster(
            backplane.presence,
            ChannelHub(backplane, service),
            node,
            TTL,
            namespace=service,
            events_channel=lambda group: f"#members:{group}",
            notify=lambda conn, group, user, present: self.told.append(
                (conn.id, group, user, present)
            ),
        )


def setup() -> tuple[FakeClock, MemoryState, Replica, Replica]:
    clock = FakeClock()
    state = MemoryState(clock)
    return clock, state, Replica(state, "a"), Replica(state, "b")


async def test_joins_and_leaves_reach_listeners_on_other_replicas_at_once():
    _, _, a, b = setup()
    watcher = FakeConnection("w", "wendy")
    await b.roster.listen_group("lobby", watcher)
    phone, laptop = FakeConnection("c1", "alice"), FakeConnection("c2", "alice")
    await a.roster.join("lobby", phone)
    await a.roster.join("lobby", laptop)  # the same user: no second join
    await a.roster.leave("lobby", phone)
    assert b.told == [("w", "lobby", "alice", True)]
    await a.roster.leave("lobby", laptop)
    assert b.told[-1] == ("w", "lobby", "alice", False)
    assert await b.roster.members("lobby") == set()


async def test_a_dead_replicas_users_leave_after_the_ttl_and_refreshed_ones_stay():
    clock, _, a, b = setup()
    watcher = FakeConnection("w", "wendy")
    await b.roster.listen_group("lobby", watcher)
    await a.roster.join("lobby", FakeConnection("c1", "alice"))
    await b.roster.join("lobby", FakeConnection("c2", "bob"))
    for _ in range(4):  # b keeps refreshing; a has died and never does again
        clock.advance(TTL / 4)
        await b.roster.tick()
    assert ("w", "lobby", "alice", False) in b.told
    assert ("w", "lobby", "bob", False) not in b.told
    assert await b.roster.members("lobby") == {"bob"}


async def test_after_the_store_lost_its_data_the_owner_re_asserts_and_re_announces():
    _, state, a, b = setup()
    watcher = FakeConnection("w", "wendy")
    await b.roster.listen_group("lobby", watcher)
    await a.roster.join("lobby", FakeConnection("c1", "alice"))
    state.flush()
    await b.roster.tick()  # b's sweep sees alice gone before a repairs it
    assert b.told[-1] == ("w", "lobby", "alice", False)
    await a.roster.tick()  # a re-asserts alice and announces her again; b need not sweep
    assert b.told[-1] == ("w", "lobby", "alice", True)
    assert await b.roster.members("lobby") == {"alice"}


async def test_services_do_not_share_groups():
    _, state, _, _ = setup()
    chat = Replica(state, "a", service="chat")
    telephony = Replica(state, "b", service="telephony")
    await telephony.roster.join("online", FakeConnection("t1", "tom"))
    assert await chat.roster.members("online") == set()
    assert await telephony.roster.members("online") == {"tom"}
    assert await chat.roster.contains("online", ["tom"]) == {"tom": False}


class CoalescingReplica:
    """A replica whose room listeners hear batches, as chat's members do."""

    def __init__(self, state: MemoryState, node: str, window: float) -> None:
        backplane = MemoryBackplane(state)
        self.batches: list[tuple[str, str, dict[str, bool]]] = []  # (listener, group, changes)
        self.roster = Roster(
            backplane.presence,
            ChannelHub(backplane, "chat"),
            node,
            TTL,
            namespace="chat",
            events_channel=lambda group: f"#members:{group}",
            notify=lambda *_: pytest.fail("a room listener got a single change"),
            notify_batch=lambda conn, group, changes: self.batches.append(
                (conn.id, group, dict(changes))
            ),
            coalesce_window=window,
        )


async def test_a_burst_of_joins_reaches_each_room_listener_as_a_bounded_number_of_batches():
    state = MemoryState(FakeClock())
    a, b = CoalescingReplica(state, "a", 0.05), CoalescingReplica(state, "b", 0.05)
    listeners = [FakeConnection(f"w{i}", f"user{i}") for i in range(50)]
    for conn in listeners:
        await b.roster.listen_group("lobby", conn)
    await asyncio.sleep(0.1)
    # the first change after a quiet spell goes out at once, not a window later
    await a.roster.join("lobby", FakeConnection("c0", "alice"))
    await asyncio.sleep(0.01)
    assert sorted(b.batches) == sorted((f"w{i}", "lobby", {"alice": True}) for i in range(50))
    b.batches.clear()
    # 200 joins over ~0.2 s (4 windows): each listener hears a handful of batches, not 200
    for n in range(200):
        await a.roster.join("lobby", FakeConnection(f"j{n}", f"joiner{n}"))
        if n % 20 == 19:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    per_listener = [batch for batch in b.batches if batch[0] == "w0"]
    assert 1 <= len(per_listener) <= 8, len(per_listener)
    told: dict[str, bool] = {}
    for _, _, changes in per_listener:
        told.update(changes)
    assert told == {f"joiner{n}": True for n in range(200)}
    assert len(b.batches) == 50 * len(per_listener)


async def test_a_user_who_joins_and_leaves_inside_one_window_is_not_told():
    state = MemoryState(FakeClock())
    a, b = CoalescingReplica(state, "a", 0.05), CoalescingReplica(state, "b", 0.05)
    await b.roster.listen_group("lobby", FakeConnection("w", "wendy"))
    await a.roster.join("lobby", FakeConnection("c0", "alice"))
    await asyncio.sleep(0.01)  # alice's join goes out at once; the window starts
    flicker = FakeConnection("c1", "bob")
    await a.roster.join("lobby", flicker)
    await a.roster.leave("lobby", flicker)
    await a.roster.leave("lobby", FakeConnection("c2", "carol"))  # never joined: no change
    await asyncio.sleep(0.1)
    assert b.batches == [("w", "lobby", {"alice": True})]
    await a.roster.join("lobby", FakeConnection("c3", "dave"))
    await asyncio.sleep(0.1)
    assert b.batches[-1] == ("w", "lobby", {"dave": True})
