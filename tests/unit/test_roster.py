"""Rosters on the memory backplane with a fake clock: no sleeping, time moves by hand."""

from __future__ import annotations

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
