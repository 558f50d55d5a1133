"""Server-watched presence: who is online, across replicas, and who wants to know.

A user is online while at least one of their connections has an unexpired entry in the
backplane. Each replica refreshes its own connections' entries every ``ttl / 3``; when a
replica dies its entries expire, so a user it served goes offline within ``ttl`` plus one
sweep interval. Transitions caused by a connect or a clean disconnect are published on the
``presence`` channel at once; expiries are found by each replica's sweep over the users its
clients watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson

from services.kit.backplane import Backplane, BackplaneUnavailable, Publication
from services.kit.connection import Connection
from services.kit.hub import ChannelHub, SubscribeResult
from services.kit.protocol import encode

__all__ = ["PRESENCE_CHANNEL", "PresenceTracker"]

log = logging.getLogger(__name__)

PRESENCE_CHANNEL = "presence"
ONLINE, OFFLINE = "online", "offline"


class PresenceTracker:
    def __init__(self, backplane: Backplane, hub: ChannelHub, node: str, ttl: float) -> None:
        self._backplane = backplane
        self._hub = hub
        self._node = node
        self.ttl = ttl
        self.sweep_interval = max(0.2, ttl / 4)
        self._local: dict[Connection, str] = {}  # connection -> its presence member id
        self._watchers: dict[str, set[Connection]] = {}  # watched user -> watching conns
        self._known: dict[str, str] = {}  # last status sent to watchers, per watched user

    # -- own connections ------------------------------------------------------------
    async def connected(self, conn: Connection) -> None:
        member = f"{self._node}/{conn.id}"
        self._local[conn] = member
        if await self._backplane.presence_add(conn.user, member, self.ttl):
            await self._announce(conn.user, ONLINE)

    async def disconnected(self, conn: Connection) -> None:
        for users in self._watchers.values():
            users.discard(conn)
        for user in [u for u, conns in self._watchers.items() if not conns]:
            del self._watchers[user]
            self._known.pop(user, None)
        member = self._local.pop(conn, None)
        if member is not None and await self._backplane.presence_remove(conn.user, member):
            await self._announce(conn.user, OFFLINE)

    async def _announce(self, user: str, status: str) -> None:
        await self._hub.publish(PRESENCE_CHANNEL, orjson.dumps({"user": user, "status": status}))

    # -- watching -------------------------------------------------------------------
    async def watch(self, conn: Connection, users: list[str]) -> dict[str, str]:
        """Register ``conn`` as a watcher and return the users' current status.

        The watcher is registered before the read, so a change that lands while the read is
        in flight is either in the read or sent as an event right after the reply.
        """
        for user in users:
            self._watchers.setdefault(user, set()).add(conn)
        present = await self._backplane.presence_present(users)
        return {user: ONLINE if present[user] else OFFLINE for user in users}

    def confirm(self, conn: Connection, state: dict[str, str]) -> None:
        """After the reply is queued: catch up with changes seen during the read."""
        for user, status in state.items():
            known = self._known.setdefault(user, status)
            if known != status:
                conn.send(_presence_frame(user, known), "presence")

    def unwatch(self, conn: Connection, users: list[str]) -> None:
        for user in users:
            watchers = self._watchers.get(user)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[user]
                    self._known.pop(user, None)

    def _changed(self, user: str, status: str) -> None:
        watchers = self._watchers.get(user)
        if not watchers or self._known.get(user) == status:
            return
        self._known[user] = status
        frame = _presence_frame(user, status)
        for conn in watchers:
            conn.send(frame, "presence")

    # -- hub.Subscriber: presence events from every replica ------------------------
    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        event = orjson.loads(publication.data)
        self._changed(event["user"], event["status"])

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        return None  # the sweep re-reads every watched user anyway

    # -- background work ------------------------------------------------------------
    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._hub.subscribe(self, PRESENCE_CHANNEL, None, 0, lambda _: None)
                break
            except BackplaneUnavailable as error:
                log.warning("presence channel unavailable", extra={"error": str(error)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        refresh_every = max(0.2, self.ttl / 3)
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + refresh_every
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + refresh_every
                    entries = [(c.user, m) for c, m in self._local.items()]
                    await self._backplane.presence_refresh(entries, self.ttl)
                await self._sweep()
            except BackplaneUnavailable as error:
                log.warning("presence sweep failed", extra={"error": str(error)})

    async def _sweep(self) -> None:
        users = list(self._watchers)
        if not users:
            return
        present = await self._backplane.presence_present(users)
        for user, online in present.items():
            self._changed(user, ONLINE if online else OFFLINE)

    async def lifecycle(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(), name="presence")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _presence_frame(user: str, status: str) -> bytes:
    return encode({"op": "presence", "user": user, "status": status})
