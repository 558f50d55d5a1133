"""Call signalling: offer → ring → answer / reject / timeout → hangup, across replicas.

A call is a record in the backplane (``call:<id>``: caller, callee, state, the caller's and
the answering connection, each party's lease) changed only by compare-and-set on its
state, with a guard per user (``busy:<user>``) so a user is in one call at a time. Frames
reach users through a per-user events channel (``#calls:<user>``) that every telephony
connection of that user follows, on whichever replica it is; an event may name one
connection (``to``) or leave one out (``skip``), so a call settles on the device that
answered.

States: ringing → active → ended; ringing → rejected | missed | ended (cancelled).
A ringing call is missed after ``ring_timeout`` (the caller's replica keeps the timer). A
party whose connection closes ends the call with reason ``disconnected``.

A party whose *replica* dies cannot say so, hence leases: the replica holding a party's
connection (the caller's, and once answered the callee's) renews that party's
``<side>_seen`` time in the record every ``lease_seconds``, with the record's and the
guards' TTL. Every replica looking after a call (the parties' replicas, and while it
rings those of the callee's connections it was offered to) ends it as ``disconnected``
once the other side's lease is older than ``stale_after``. When every replica involved is
gone, the record and the guards expire a few leases later.

A party's client that lost its connection (dropped, drained, its replica killed or cut
off) comes back on a new connection, possibly to another replica, and its active call
follows it there: at once where the old replica saw the drop (it marks the side
``<side>_dropped``), otherwise once the old holder's lease is older than ``adopt_after``
(before ``stale_after`` would end the call). A signal from a party's other connection
takes the call over at once, too. Only a close by the client itself (1000/1001) ends its
calls immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Set
from typing import Any

import orjson

from services.kit.backplane import Publication
from services.kit.connection import Connection
from services.kit.hub import SubscribeResult
from services.kit.protocol import (
    CHANNEL_PATTERN,
    ClientFrame,
    ErrorCode,
    ProtocolError,
    encode,
    require_object,
    require_str,
)
from services.kit.roster import Roster
from services.kit.service import ServiceContext

from .blocks import BlockList
from .call_records import Transition, call_records_for
from .limits import TelephonyLimits
from .quota import CallQuota

__all__ = ["CallDesk"]

log = logging.getLogger(__name__)

LIVE = frozenset({"ringing", "active"})
ENDED_TTL = 60.0  # an ended call's record stays a minute for late frames
MAX_SIGNAL_BYTES = 16 * 1024


def events_channel(user: str) -> str:
    return f"#calls:{user}"  # '#': not a client channel, nobody can subscribe to it


def _line(user: str) -> str:
    """The record naming the call last placed to ``user`` (to offer it to new devices)."""
    return f"line:{user}"


def _guards(record: dict[str, str]) -> list[str]:
    return [f"busy:{record['caller']}", f"busy:{record['callee']}"]


class _Inbox:
    """Follows one user's events channel for one connection (hub.Subscriber)."""

    def __init__(self, conn: Connection, offered: Callable[[Connection, str], bool]) -> None:
        self.conn = conn
        self._offered = offered

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        event = orjson.loads(publication.data)
        if event.get("to") not in (None, self.conn.id) or event.get("skip") == self.conn.id:
            return
        payload = event["frame"]
        if payload["op"] == "incoming" and not self._offered(self.conn, payload["call_id"]):
            return  # already offered when the connection opened
        self.conn.send(encode(payload), payload["op"])

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        return None


class CallDesk:
    def __init__(
        self,
        ctx: ServiceContext,
        presence: Roster,
        online: str,
        limits: TelephonyLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``presence``: the roster whose group ``online`` holds every connected user."""
        self.ctx = ctx
        self._presence = presence
        self._online = online
        self._records = call_records_for(ctx.backplane)
        self.ring_timeout = ctx.settings.ring_timeout_seconds
        self.limits = limits
        self._clock = clock  # wall clock: leases are compared across replicas
        self._quota = CallQuota(self._records, clock)
        self.blocks = BlockList(self._records, limits.max_blocked_users)
        self._inboxes: dict[Connection, _Inbox] = {}
        # calls a connection holds (call id -> caller, callee): this replica renews its lease
        self._mine: dict[Connection, dict[str, tuple[str, str]]] = {}
        # ringing calls offered to a connection: this replica watches the caller's lease
        self._offers: dict[Connection, set[str]] = {}
        # active calls of a connection's user held by another connection that may be gone:
        # this replica takes the user's side over when that holder's lease lapses
        self._orphans: dict[Connection, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def live_ttl(self) -> float:
        """A live call's record and guards outlive the last renewal by this much."""
        return self.limits.stale_after + 2 * self.limits.lease_seconds

    # -- connections ----------------------------------------------------------------
    async def connected(self, conn: Connection) -> None:
        inbox = self._inboxes[conn] = _Inbox(conn, self._offer)
        await self.ctx.hub.subscribe_live(inbox, events_channel(conn.user))
        await self._find_orphan(conn)
        # A call ringing for this user before this connection opened rings here too.
        line = await self._records.get(_line(conn.user))
        if line is None:
            return
        call_id = line["call"]
        record = await self._records.get(f"call:{call_id}")
        if record is None or record["state"] != "ringing" or record["callee"] != conn.user:
            return
        if self._offer(conn, call_id):
            incoming = {"op": "incoming", "call_id": call_id, "from": record["caller"]}
            conn.send(encode(incoming), "incoming")

    async def disconnected(self, conn: Connection) -> None:
        inbox = self._inboxes.pop(conn, None)
        if inbox is not None:
            await self.ctx.hub.unsubscribe(inbox, events_channel(conn.user))
        self._offers.pop(conn, None)
        self._orphans.pop(conn, None)
        calls = self._mine.pop(conn, {})
        if not _left_on_purpose(conn):
            # Dropped, drained or cut off: the client comes back (to any replica) and its
            # call follows it; if it does not, its lease lapses and the other side is told.
            for call_id, (caller, _) in calls.items():
                side = "caller" if conn.user == caller else "callee"
                dropped = {f"{side}_dropped": conn.id}
                change = Transition(frozenset({"active"}), dropped, self.live_ttl, [], False)
                with contextlib.suppress(Exception):  # best effort: the lease still decides
                    await self._records.transition(f"call:{call_id}", change)
            return
        for call_id in calls:
            record = await self._records.get(f"call:{call_id}")
            if record is not None and _holder(record, conn.user) in (None, conn.id):
                await self._end(call_id, conn.user, conn.id, "disconnected", LIVE)

    def _offer(self, conn: Connection, call_id: str) -> bool:
        """Remember that ``call_id`` rings on ``conn``; False if it already did."""
        offers = self._offers.setdefault(conn, set())
        if call_id in offers:
            return False
        offers.add(call_id)
        return True

    # -- ops ------------------------------------------------------------------------
    async def call(self, conn: Connection, frame: ClientFrame) -> None:
        callee = require_str(frame, "to", 64)
        if not CHANNEL_PATTERN.fullmatch(callee) or callee == conn.user:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "to must be another user's id", frame.id)
        limits = self.limits
        await self._quota.require(
            f"caller:{conn.user}", limits.calls_per_caller, limits.call_window_seconds,
            "calls", frame.id,
        )  # fmt: skip
        present = await self._presence.contains(self._online, [callee])
        # A blocked caller hears exactly what a caller of an offline user hears.
        if not present[callee] or conn.user in await self.blocks.blocked_by(callee):
            conn.send(encode({"op": "offline", "id": frame.id}), "offline")
            return
        await self._quota.require(
            f"pair:{conn.user}:{callee}", limits.calls_per_callee, limits.callee_window_seconds,
            "calls to the same user", frame.id,
        )  # fmt: skip
        call_id = secrets.token_hex(8)
        record = {
            "state": "ringing",
            "caller": conn.user,
            "callee": callee,
            "caller_conn": conn.id,
            "caller_seen": repr(self._clock()),
        }
        ring_ttl = self.ring_timeout + self.live_ttl
        if not await self._records.create(f"call:{call_id}", record, ring_ttl, _guards(record)):
            conn.send(encode({"op": "busy", "id": frame.id}), "busy")
            return
        await self._point_line(callee, call_id, ring_ttl)
        self._mine.setdefault(conn, {})[call_id] = (conn.user, callee)
        conn.send(encode({"op": "ringing", "id": frame.id, "call_id": call_id}), "ringing")
        incoming = {"op": "incoming", "call_id": call_id, "from": conn.user}
        await self._tell(callee, incoming)
        loop = asyncio.get_running_loop()
        self._timers[call_id] = loop.call_later(self.ring_timeout, self._ring_out, call_id)

    async def answer(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, record = await self._party(conn, frame, callee_only=True, own_device=True)
        updates = {"state": "active", "callee_conn": conn.id, "callee_seen": repr(self._clock())}
        change = Transition(frozenset({"ringing"}), updates, self.live_ttl, _guards(record), False)
        updated = await self._records.transition(f"call:{call_id}", change)
        if updated is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is no longer ringing", frame.id)
        self._stop_timer(call_id)
        self._mine.setdefault(conn, {})[call_id] = (record["caller"], record["callee"])
        answered = {"op": "answered", "call_id": call_id}
        await self._tell(record["caller"], answered, to=record["caller_conn"])
        # the callee's other devices stop ringing
        await self._tell(record["callee"], {**answered, "elsewhere": True}, skip=conn.id)

    async def reject(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, record = await self._party(conn, frame, callee_only=True, own_device=True)
        if not await self._settle(call_id, record, {"ringing"}, {"state": "rejected"}):
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is no longer ringing", frame.id)
        rejected = {"op": "rejected", "call_id": call_id}
        await self._tell(record["caller"], rejected, to=record["caller_conn"])
        await self._tell(record["callee"], rejected, skip=conn.id)

    async def hangup(self, conn: Connection, frame: ClientFrame) -> None:
        # Any device of a party may end the party's call: the one holding it may be gone.
        call_id, _ = await self._party(conn, frame, callee_only=False, own_device=False)
        if not await self._end(call_id, conn.user, conn.id, "hangup", LIVE):
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call has already ended", frame.id)

    async def signal(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, record = await self._party(conn, frame, callee_only=False, own_device=False)
        data = require_object(frame, "data")
        if len(orjson.dumps(data)) > MAX_SIGNAL_BYTES:
            raise ProtocolError(ErrorCode.TOO_LARGE, "signal data is over 16 KiB", frame.id)
        if record["state"] != "active":
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is not active", frame.id)
        if _holder(record, conn.user) != conn.id:
            record = await self._take_over(conn, call_id, record, frame)
        relay = {"op": "signal", "call_id": call_id, "from": conn.user, "data": data}
        if conn.id == record.get("caller_conn"):
            await self._tell(record["callee"], relay, to=record.get("callee_conn"))
        else:
            await self._tell(record["caller"], relay, to=record["caller_conn"])

    async def _take_over(
        self, conn: Connection, call_id: str, record: dict[str, str], frame: ClientFrame | None
    ) -> dict[str, str]:
        """Move the user's side of an active call to ``conn``: a client that reconnected
        (its replica died, drained, or it was cut off) carries its call on from the new
        connection; the device that held it before, if alive, hears ``ended`` elsewhere."""
        if conn.closing:
            # A frame read before the connection closed or its socket went, handled late
            # (its Redis work waited out an outage): the client has reconnected, and its
            # new connection may hold the call already. A closing connection never takes a
            # call from it (nor would it renew a call no device of the user can hear).
            frame_id = None if frame is None else frame.id
            raise ProtocolError(ErrorCode.NOT_FOUND, "the connection is closing", frame_id)
        side = "caller" if conn.user == record["caller"] else "callee"
        previous = record.get(f"{side}_conn")
        updates = {f"{side}_conn": conn.id, f"{side}_seen": repr(self._clock())}
        change = Transition(frozenset({"active"}), updates, self.live_ttl, _guards(record), False)
        moved = await self._records.transition(f"call:{call_id}", change)
        if moved is None:
            frame_id = None if frame is None else frame.id
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is not active", frame_id)
        self._mine.setdefault(conn, {})[call_id] = (record["caller"], record["callee"])
        log.info("call taken over", extra={"call": call_id, "user": conn.user, "conn": conn.id})
        if previous is not None:
            ended = {"op": "ended", "call_id": call_id, "reason": "moved", "elsewhere": True}
            await self._tell(conn.user, ended, to=previous)
        return moved

    # -- a call following its party to a new connection ---------------------------------
    async def _find_orphan(self, conn: Connection) -> None:
        """Note the user's active call held by another connection, and adopt it at once if
        that connection is known to be gone."""
        key = await self._records.guarded(f"busy:{conn.user}")
        if key is None or not key.startswith("call:"):
            return
        self._orphans[conn] = key.removeprefix("call:")
        await self._adopt_if_orphaned(conn)

    async def _adopt_if_orphaned(self, conn: Connection) -> None:
        call_id = self._orphans.get(conn)
        if call_id is None:
            return
        record = await self._records.get(f"call:{call_id}")
        if record is None or record["state"] != "active" or conn.user not in _parties(record):
            self._orphans.pop(conn, None)
            return
        side = "caller" if conn.user == record["caller"] else "callee"
        holder = record.get(f"{side}_conn")
        if holder == conn.id:
            self._orphans.pop(conn, None)
            return
        seen = float(record.get(f"{side}_seen", "0"))
        gone = record.get(f"{side}_dropped") == holder
        if gone or self._clock() - seen > self.limits.adopt_after:
            self._orphans.pop(conn, None)
            with contextlib.suppress(ProtocolError):  # ended meanwhile: nothing to adopt
                await self._take_over(conn, call_id, record, None)

    # -- leases ---------------------------------------------------------------------
    def abandon(self) -> None:
        """Fault-injection seam: stop tending this replica's calls, as a replica killed
        with SIGKILL would (no lease renewed, no call ended); tests use it to play a dead
        replica whose sockets are still open."""
        self._mine.clear()
        self._offers.clear()
        self._orphans.clear()

    async def lifecycle(self) -> AsyncIterator[None]:
        """Renew and check leases while the app runs (an aiohttp cleanup context)."""
        task = asyncio.create_task(self._keep_leases(), name="call-leases")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.limits.lease_seconds)
            try:
                await self.check_leases()
            except Exception:  # the backplane may be away: try again next lease
                log.warning("renewing call leases failed", exc_info=True)

    async def check_leases(self) -> None:
        """Renew this replica's parties' leases; end calls whose other side's lapsed."""
        for conn, calls in list(self._mine.items()):
            for call_id, (caller, callee) in list(calls.items()):
                side = "caller" if conn.user == caller else "callee"
                await self._renew(conn, call_id, side, caller, callee)
        for conn, offers in list(self._offers.items()):
            for call_id in list(offers):
                await self._watch_offer(conn, call_id)
        for conn in list(self._orphans):
            await self._adopt_if_orphaned(conn)

    async def _renew(
        self, conn: Connection, call_id: str, side: str, caller: str, callee: str
    ) -> None:
        change = Transition(
            LIVE,
            {f"{side}_seen": repr(self._clock())},
            self.live_ttl,
            [f"busy:{caller}", f"busy:{callee}"],
            False,
        )
        record = await self._records.transition(f"call:{call_id}", change)
        if record is None:  # ended elsewhere (its parties were told), or expired
            self._mine.get(conn, {}).pop(call_id, None)
            if await self._records.get(f"call:{call_id}") is None:
                ended = {"op": "ended", "call_id": call_id, "reason": "disconnected"}
                conn.send(encode(ended), "ended")
            return
        if record["state"] == "active" and record.get(f"{side}_conn") != conn.id:
            self._mine.get(conn, {}).pop(call_id, None)  # taken over by another connection
            return
        # While it rings nobody holds the callee's side: only the caller has a lease.
        other = "callee" if side == "caller" else "caller"
        if record["state"] == "active" and self._lapsed(record, other):
            await self._end(call_id, record[other], None, "disconnected", {"active"})

    async def _watch_offer(self, conn: Connection, call_id: str) -> None:
        record = await self._records.get(f"call:{call_id}")
        if record is None or record["state"] != "ringing":
            self._offers.get(conn, set()).discard(call_id)
            return
        if self._lapsed(record, "caller"):
            await self._end(call_id, record["caller"], None, "disconnected", {"ringing"})

    def _lapsed(self, record: dict[str, str], side: str) -> bool:
        seen = float(record.get(f"{side}_seen", "0"))
        return self._clock() - seen > self.limits.stale_after

    # -- internals ------------------------------------------------------------------
    async def _party(
        self, conn: Connection, frame: ClientFrame, callee_only: bool, own_device: bool
    ) -> tuple[str, dict[str, str]]:
        """The call named by the frame, if ``conn`` may act on it; with ``own_device``
        only from the connection holding the user's side of the call."""
        call_id = require_str(frame, "call_id", 64)
        record = await self._records.get(f"call:{call_id}")
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such call", frame.id)
        parties = {record["callee"]} if callee_only else {record["caller"], record["callee"]}
        if conn.user not in parties:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such call", frame.id)
        # A call belongs to the caller's connection and, once answered, the answering one.
        own_side = "caller_conn" if conn.user == record["caller"] else "callee_conn"
        if own_device and record.get(own_side, conn.id) != conn.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the call is on another device", frame.id)
        return call_id, record

    async def _settle(
        self, call_id: str, record: dict[str, str], expect: Set[str], updates: dict[str, str]
    ) -> dict[str, str] | None:
        """Move a call out of its live states, releasing both users' guards."""
        change = Transition(frozenset(expect), updates, ENDED_TTL, _guards(record), True)
        settled = await self._records.transition(f"call:{call_id}", change)
        if settled is not None:
            self._stop_timer(call_id)
        return settled

    async def _end(
        self, call_id: str, by: str, by_conn: str | None, reason: str, expect: Set[str]
    ) -> bool:
        """End a call on behalf of user ``by`` (from connection ``by_conn``, if any): the
        other party hears ``ended``, and so does ``by``'s device that had the call."""
        record = await self._records.get(f"call:{call_id}")
        if record is None:
            return False
        ended = await self._settle(call_id, record, expect, {"state": "ended", "reason": reason})
        if ended is None:
            return False
        if by_conn is not None and record["state"] == "ringing" and by == record["caller"]:
            reason = "cancelled"  # the caller gave up (a lost replica stays "disconnected")
        frame = {"op": "ended", "call_id": call_id, "reason": reason}
        if by == record["caller"]:
            await self._tell(record["callee"], frame, to=record.get("callee_conn"))
        else:
            await self._tell(record["caller"], frame, to=record["caller_conn"])
        if by_conn is not None:  # and the device of ``by`` that had the call, if another
            elsewhere = {**frame, "elsewhere": True}
            holder = record.get("caller_conn" if by == record["caller"] else "callee_conn")
            if holder is None:  # a ringing call rings on all the callee's devices
                await self._tell(by, elsewhere, skip=by_conn)
            elif holder != by_conn:
                await self._tell(by, elsewhere, to=holder)
        return True

    async def _point_line(self, callee: str, call_id: str, ttl: float) -> None:
        """Name ``call_id`` as the call ringing for ``callee`` (one at a time: the busy
        guard is held, so no other call is being placed to them now)."""
        key, fields = _line(callee), {"call": call_id}
        repoint = Transition(frozenset({"set"}), fields, ttl, [], False)
        if await self._records.transition(key, repoint):
            return
        if not await self._records.create(key, {"state": "set", **fields}, ttl, []):
            await self._records.transition(key, repoint)

    def _ring_out(self, call_id: str) -> None:
        self._timers.pop(call_id, None)
        task = asyncio.ensure_future(self._missed(call_id))
        task.add_done_callback(_log_failure)

    async def _missed(self, call_id: str) -> None:
        record = await self._records.get(f"call:{call_id}")
        if record is None:
            return
        if await self._settle(call_id, record, {"ringing"}, {"state": "missed"}) is not None:
            missed = {"op": "missed", "call_id": call_id}
            await self._tell(record["caller"], missed, to=record["caller_conn"])
            await self._tell(record["callee"], missed)

    def _stop_timer(self, call_id: str) -> None:
        timer = self._timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()

    async def _tell(
        self, user: str, frame: dict[str, Any], to: str | None = None, skip: str | None = None
    ) -> None:
        event: dict[str, Any] = {"frame": frame}
        if to is not None:
            event["to"] = to
        if skip is not None:
            event["skip"] = skip
        await self.ctx.hub.publish(events_channel(user), orjson.dumps(event), history=False)


def _parties(record: dict[str, str]) -> tuple[str, str]:
    return record["caller"], record["callee"]


def _holder(record: dict[str, str], user: str) -> str | None:
    """The connection holding ``user``'s side of the call (None: not answered yet)."""
    return record.get("caller_conn" if user == record["caller"] else "callee_conn")


def _left_on_purpose(conn: Connection) -> bool:
    """The client closed the socket itself (a close frame with 1000 or 1001), rather than
    the server closing it (drain, outage, slow consumer) or the connection dropping."""
    return conn.close_code is None and conn.ws.close_code in (1000, 1001)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ring timeout failed", exc_info=task.exception())
