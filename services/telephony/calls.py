"""Call signalling: offer → ring → answer / reject / timeout → hangup, across replicas.

A call is a record in the backplane's store (``call:<id>``, see call_records: caller,
callee, state, the caller's and the answering connection) changed only by compare-and-set
on its state, with a guard per user (``busy:<user>``) so a user is in one call at a time.
Frames reach users through a per-user events channel (``#calls:<user>``) that every
telephony connection of that user follows, on whichever replica it is. The channel is
ephemeral (delivered live, never stored), so no signalling payload stays in Redis. An
event may name one connection (``to``) or leave one out (``skip``), so a call settles on
the device that answered.

States: ringing → active → ended; ringing → rejected | missed | ended (cancelled).
A ringing call is missed after ``ring_timeout`` (the caller's replica keeps the timer; if
that replica dies the record and guards expire after ``RINGING_TTL``). A party whose
connection closes ends the call with reason ``disconnected``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
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

from .call_records import Transition, call_records_for

__all__ = ["CallDesk"]

log = logging.getLogger(__name__)

RINGING_TTL = 60.0  # a ringing call's record outlives its timer, in case the timer dies
ACTIVE_TTL = 4 * 3600.0  # the longest call
ENDED_TTL = 60.0  # an ended call's record stays a minute for late frames
MAX_SIGNAL_BYTES = 16 * 1024


def events_channel(user: str) -> str:
    return f"#calls:{user}"  # '#': not a client channel, nobody can subscribe to it


class _Inbox:
    """Follows one user's events channel for one connection (hub.Subscriber)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        event = orjson.loads(publication.data)
        if event.get("to") not in (None, self.conn.id) or event.get("skip") == self.conn.id:
            return
        payload = event["frame"]
        self.conn.send(encode(payload), payload["op"])

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        return None


class CallDesk:
    def __init__(
        self, ctx: ServiceContext, presence: Roster, online: str, ring_timeout: float = 30.0
    ) -> None:
        """``presence``: the roster whose group ``online`` holds every connected user."""
        self.ctx = ctx
        self._presence = presence
        self._online = online
        self._records = call_records_for(ctx.backplane)
        self.ring_timeout = ring_timeout
        self._inboxes: dict[Connection, _Inbox] = {}
        self._mine: dict[Connection, set[str]] = {}  # calls this connection is a party to
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- connections ----------------------------------------------------------------
    async def connected(self, conn: Connection) -> None:
        inbox = self._inboxes[conn] = _Inbox(conn)
        await self.ctx.hub.subscribe_live(inbox, events_channel(conn.user))

    async def disconnected(self, conn: Connection) -> None:
        inbox = self._inboxes.pop(conn, None)
        if inbox is not None:
            await self.ctx.hub.unsubscribe(inbox, events_channel(conn.user))
        for call_id in self._mine.pop(conn, set()):
            await self._end(call_id, conn, "disconnected", {"ringing", "active"})

    # -- ops ------------------------------------------------------------------------
    async def call(self, conn: Connection, frame: ClientFrame) -> None:
        callee = require_str(frame, "to", 64)
        if not CHANNEL_PATTERN.fullmatch(callee) or callee == conn.user:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "to must be another user's id", frame.id)
        present = await self._presence.contains(self._online, [callee])
        if not present[callee]:
            conn.send(encode({"op": "offline", "id": frame.id}), "offline")
            return
        call_id = secrets.token_hex(8)
        record = {
            "state": "ringing",
            "caller": conn.user,
            "callee": callee,
            "caller_conn": conn.id,
        }
        guards = [f"busy:{conn.user}", f"busy:{callee}"]
        if not await self._records.create(f"call:{call_id}", record, RINGING_TTL, guards):
            conn.send(encode({"op": "busy", "id": frame.id}), "busy")
            return
        self._mine.setdefault(conn, set()).add(call_id)
        conn.send(encode({"op": "ringing", "id": frame.id, "call_id": call_id}), "ringing")
        incoming = {"op": "incoming", "call_id": call_id, "from": conn.user}
        await self._tell(callee, incoming)
        loop = asyncio.get_running_loop()
        self._timers[call_id] = loop.call_later(self.ring_timeout, self._ring_out, call_id)

    async def answer(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, record = await self._party(conn, frame, callee_only=True)
        updated = await self._move(call_id, record, {"ringing"}, "active", conn, ACTIVE_TTL)
        if updated is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is no longer ringing", frame.id)
        self._stop_timer(call_id)
        self._mine.setdefault(conn, set()).add(call_id)
        answered = {"op": "answered", "call_id": call_id}
        await self._tell(record["caller"], answered, to=record["caller_conn"])
        # the callee's other devices stop ringing
        await self._tell(record["callee"], {**answered, "elsewhere": True}, skip=conn.id)

    async def reject(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, record = await self._party(conn, frame, callee_only=True)
        if await self._move(call_id, record, {"ringing"}, "rejected", conn, ENDED_TTL) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is no longer ringing", frame.id)
        self._stop_timer(call_id)
        rejected = {"op": "rejected", "call_id": call_id}
        await self._tell(record["caller"], rejected, to=record["caller_conn"])
        await self._tell(record["callee"], rejected, skip=conn.id)

    async def hangup(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, _ = await self._party(conn, frame, callee_only=False)
        if not await self._end(call_id, conn, "hangup", {"ringing", "active"}):
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call has already ended", frame.id)

    async def signal(self, conn: Connection, frame: ClientFrame) -> None:
        call_id, record = await self._party(conn, frame, callee_only=False)
        data = require_object(frame, "data")
        if len(orjson.dumps(data)) > MAX_SIGNAL_BYTES:
            raise ProtocolError(ErrorCode.TOO_LARGE, "signal data is over 16 KiB", frame.id)
        if record["state"] != "active":
            raise ProtocolError(ErrorCode.NOT_FOUND, "the call is not active", frame.id)
        relay = {"op": "signal", "call_id": call_id, "from": conn.user, "data": data}
        if conn.id == record.get("caller_conn"):
            await self._tell(record["callee"], relay, to=record.get("callee_conn"))
        else:
            await self._tell(record["caller"], relay, to=record["caller_conn"])

    # -- internals ------------------------------------------------------------------
    async def _party(
        self, conn: Connection, frame: ClientFrame, callee_only: bool
    ) -> tuple[str, dict[str, str]]:
        """The call named by the frame, if ``conn`` may act on it."""
        call_id = require_str(frame, "call_id", 64)
        record = await self._records.get(f"call:{call_id}")
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such call", frame.id)
        parties = {record["callee"]} if callee_only else {record["caller"], record["callee"]}
        if conn.user not in parties:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such call", frame.id)
        # A call belongs to the caller's connection and, once answered, the answering one.
        own_side = "caller_conn" if conn.user == record["caller"] else "callee_conn"
        if record.get(own_side, conn.id) != conn.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the call is on another device", frame.id)
        return call_id, record

    async def _move(
        self,
        call_id: str,
        record: dict[str, str],
        expect: set[str],
        state: str,
        conn: Connection,
        ttl: float,
        reason: str | None = None,
    ) -> dict[str, str] | None:
        updates = {"state": state}
        if state == "active":
            updates["callee_conn"] = conn.id
        if reason is not None:
            updates["reason"] = reason
        guards = [f"busy:{record['caller']}", f"busy:{record['callee']}"]
        release = state != "active"
        change = Transition(frozenset(expect), updates, ttl, guards, release)
        return await self._records.transition(f"call:{call_id}", change)

    async def _end(self, call_id: str, by: Connection, reason: str, expect: set[str]) -> bool:
        record = await self._records.get(f"call:{call_id}")
        if record is None:
            return False
        ended = await self._move(call_id, record, expect, "ended", by, ENDED_TTL, reason)
        if ended is None:
            return False
        self._stop_timer(call_id)
        was_ringing = record["state"] == "ringing"
        if was_ringing and by.user == record["caller"]:
            reason = "cancelled"
        frame = {"op": "ended", "call_id": call_id, "reason": reason}
        if by.user == record["caller"]:
            await self._tell(record["callee"], frame, to=record.get("callee_conn"))
        else:
            await self._tell(record["caller"], frame, to=record["caller_conn"])
        return True

    def _ring_out(self, call_id: str) -> None:
        self._timers.pop(call_id, None)
        task = asyncio.ensure_future(self._missed(call_id))
        task.add_done_callback(_log_failure)

    async def _missed(self, call_id: str) -> None:
        record = await self._records.get(f"call:{call_id}")
        if record is None:
            return
        guards = [f"busy:{record['caller']}", f"busy:{record['callee']}"]
        change = Transition(frozenset({"ringing"}), {"state": "missed"}, ENDED_TTL, guards, True)
        moved = await self._records.transition(f"call:{call_id}", change)
        if moved is not None:
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


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ring timeout failed", exc_info=task.exception())
