"""The call desk's leases on the memory backplane with a fake clock: two replicas, time moved
by hand, leases checked when the test says so (no sleeping)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
from fakes import FakeClock

from services.kit.backplane import MemoryBackplane, MemoryState
from services.kit.connection import Ended
from services.kit.hub import ChannelHub
from services.kit.protocol import ClientFrame, parse_client_frame
from services.kit.roster import Roster
from services.kit.settings import Settings
from services.telephony.calls import CallDesk
from services.telephony.limits import TelephonyLimits

LIMITS = TelephonyLimits(lease_seconds=2.0)  # adopt after 4 s, stale after 8 s


@dataclass(eq=False)
class Phone:
    """What the desk uses of a connection; keeps the frames it is sent."""

    id: str
    user: str
    close_code: int | None = None
    ended: Ended = field(default_factory=Ended)
    ws: Any = field(default_factory=lambda: SimpleNamespace(close_code=None))
    heard: list[dict[str, Any]] = field(default_factory=list)

    @property
    def closing(self) -> bool:  # no socket here to go away: the server's close, or the end
        return self.close_code is not None or self.ended.is_set()

    def send(self, frame: bytes, op: str) -> None:
        self.heard.append(orjson.loads(frame))

    def ops(self) -> list[str]:
        return [f["op"] for f in self.heard]


class Replica:
    def __init__(self, state: MemoryState, clock: FakeClock, node: str) -> None:
        backplane = MemoryBackplane(state)
        hub = ChannelHub(backplane, "telephony")
        self.online = Roster(
            backplane.presence, hub, node, 60.0, namespace="telephony",
            events_channel=lambda group: f"#presence:{group}", notify=lambda *_: None,
        )  # fmt: skip
        settings = Settings(service="telephony", token_secret="x")
        ctx = SimpleNamespace(hub=hub, backplane=backplane, settings=settings)
        self.desk = CallDesk(ctx, self.online, "online", LIMITS, clock=clock)  # type: ignore[arg-type]

    async def connect(self, conn_id: str, user: str) -> Phone:
        phone = Phone(conn_id, user)
        await self.online.join("online", phone)  # type: ignore[arg-type]
        await self.desk.connected(phone)  # type: ignore[arg-type]
        return phone


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def frame(op: str, **fields: Any) -> ClientFrame:
    return parse_client_frame(orjson.dumps({"op": op, **fields}).decode())


async def answered_call() -> tuple[FakeClock, Replica, Replica, Phone, Phone, str]:
    clock = FakeClock()
    state = MemoryState(clock)
    one, two = Replica(state, clock, "one"), Replica(state, clock, "two")
    alice, bob = await one.connect("a1", "alice"), await two.connect("b1", "bob")
    await one.desk.call(alice, frame("call", id=1, to="bob"))
    call_id = alice.heard[-1]["call_id"]
    await settle()
    await two.desk.answer(bob, frame("answer", call_id=call_id))
    await settle()
    assert "answered" in alice.ops()
    return clock, one, two, alice, bob, call_id


async def test_a_party_whose_replica_stops_renewing_is_ended_after_stale_after():
    clock, one, two, alice, _, call_id = await answered_call()
    two.desk.abandon()  # bob's replica is killed
    clock.advance(LIMITS.stale_after - 1)
    await one.desk.check_leases()
    await settle()
    assert "ended" not in alice.ops()  # still inside the lease
    clock.advance(2)
    await one.desk.check_leases()
    await settle()
    assert alice.heard[-1] == {"op": "ended", "call_id": call_id, "reason": "disconnected"}


async def test_a_renewed_lease_keeps_the_call_however_long_it_lasts():
    clock, one, two, alice, _, _ = await answered_call()
    for _ in range(20):
        clock.advance(LIMITS.lease_seconds)
        await two.desk.check_leases()
        await one.desk.check_leases()
    await settle()
    assert "ended" not in alice.ops()


async def test_a_new_connection_adopts_the_call_after_a_missed_renewal_not_before():
    clock, one, two, alice, bob, call_id = await answered_call()
    two.desk.abandon()
    bob_again = await one.connect("b2", "bob")  # bob's client, back on replica one
    await one.desk.signal(alice, frame("signal", call_id=call_id, data={"n": 1}))
    await settle()
    assert bob.heard[-1]["op"] == "signal" and bob_again.heard == []  # not yet adopted
    clock.advance(LIMITS.adopt_after + 0.5)
    await one.desk.check_leases()
    await one.desk.signal(alice, frame("signal", call_id=call_id, data={"n": 2}))
    await settle()
    assert bob_again.heard[-1]["data"] == {"n": 2}
    assert bob.heard[-1] == {
        "op": "ended",
        "call_id": call_id,
        "reason": "moved",
        "elsewhere": True,
    }
    for _ in range(12):  # replica one renews bob's side from now on
        clock.advance(LIMITS.lease_seconds)
        await one.desk.check_leases()
    await settle()
    assert "ended" not in alice.ops() and "ended" not in bob_again.ops()


async def test_a_live_holder_is_never_displaced_by_a_users_other_connection():
    clock, one, two, alice, bob, call_id = await answered_call()
    laptop = await one.connect("b2", "bob")
    for _ in range(6):
        clock.advance(LIMITS.lease_seconds)
        await two.desk.check_leases()  # bob's phone's replica renews
        await one.desk.check_leases()
    await one.desk.signal(alice, frame("signal", call_id=call_id, data={"n": 1}))
    await settle()
    assert bob.heard[-1]["data"] == {"n": 1} and "signal" not in laptop.ops()
