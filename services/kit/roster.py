"""Rosters: who is present in which group, across replicas, told to local listeners.

A group is a chat room or, for telephony, everyone online. A user is present in a group
while at least one of their connections is (several tabs or devices count once). Each
replica re-asserts its own connections' entries every ``ttl / 4`` (creating them again if
the store lost them, e.g. Redis lost its data). The TTL follows the heartbeat: 2 ping
intervals + 10 s (a client that stopped answering is closed, and leaves, within 2
intervals anyway), so a loaded replica, which pings less often, also writes presence less
often; ``WWWS_PRESENCE_TTL_SECONDS`` fixes it instead.

A dead replica's users do not wait for the TTL: every replica marks itself alive in its
service's registry every ``WWWS_REPLICA_LIVENESS_SECONDS / 3`` seconds (for
``WWWS_REPLICA_LIVENESS_SECONDS``, 6), and each replica's mark also returns the replicas
whose mark expired; the first to see one removes that replica's entries and announces the
leaves. A dead replica's users are gone within 4/3 of the liveness (8 s) of its death,
plus the events' delivery. A
replica is registered under its node id and a per-process suffix, so a replica restarted
under the same node id (Docker's restart keeps the hostname) cleans up its earlier life.

Groups are namespaced per service in the presence store: a chat room named ``online`` is
not telephony's ``online``.

Transitions from a join or a clean leave are published at once on the group's events
channel (ephemeral: delivered live, never stored), so every replica hears them; expiries
are found by each replica's sweep over the groups (or users) its own clients listen to.
Listeners hear each change once, in order.

Listeners of a whole group (a chat room's members) hear its changes coalesced: the first
change after a quiet spell goes out on the next loop iteration, later ones at most once
per ``coalesce_window`` (0.2 s) as one batch per group, so n users joining a room in a
burst cost each member a bounded number of frames instead of n (O(n) frames in all, not
O(n^2)). A user who joins and leaves inside one window is not told at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web

from .background import running, wait_or_stop
from .backplane import BackplaneUnavailable, Presence, Publication
from .connection import Connection
from .hub import ChannelHub, SubscribeResult
from .service import ServiceContext

__all__ = [
    "COALESCE_WINDOW",
    "LIVENESS_INTERVAL",
    "LIVENESS_TTL",
    "Notify",
    "NotifyBatch",
    "Roster",
    "add_roster",
]

log = logging.getLogger(__name__)

LIVENESS_INTERVAL = 2.0
LIVENESS_TTL = 6.0
COALESCE_WINDOW = 0.2

# (listener, group, user, present): turn a change into the service's frame
Notify = Callable[[Connection, str, str, bool], None]
# (listener, group, {user: present}): a whole-group listener's coalesced changes
NotifyBatch = Callable[[Connection, str, dict[str, bool]], None]


class Roster:
    def __init__(
        self,
        presence: Presence,
        hub: ChannelHub,
        node: str,
        ttl: float | Callable[[], float],
        *,
        namespace: str,
        events_channel: Callable[[str], str],
        notify: Notify,
        notify_batch: NotifyBatch | None = None,
        coalesce_window: float = COALESCE_WINDOW,
        liveness_interval: float = LIVENESS_INTERVAL,
        liveness_ttl: float = LIVENESS_TTL,
    ) -> None:
        self._presence = presence
        self._scope = namespace
        self._namespace = f"{namespace}:"
        self._hub = hub
        # this process's life: a restart under the same node id is another owner
        self._node = f"{node}.{secrets.token_hex(3)}"
        self._ttl = ttl
        self._liveness = (liveness_interval, liveness_ttl)
        self._abandoned = False
        self._events_channel = events_channel
        self._notify = notify
        self._notify_batch = notify_batch
        self._window = coalesce_window
        # group -> user -> [state whole-group listeners were last told, latest state]
        self._batches: dict[str, dict[str, list[bool]]] = {}
        self._flushes: dict[str, asyncio.TimerHandle] = {}
        self._last_flush: dict[str, float] = {}
        self._local: dict[tuple[str, Connection], str] = {}  # (group, conn) -> entry id
        self._whole: dict[str, set[Connection]] = {}  # group -> listeners of every member
        self._some: dict[str, dict[str, set[Connection]]] = {}  # group -> user -> listeners
        self._known: dict[str, dict[str, bool]] = {}  # group -> user -> last told state
        self._pending: dict[Connection, dict[tuple[str, str], bool]] = {}
        self._channels: dict[str, _EventsSubscriber] = {}  # events channel -> subscriber
        self._channel_users: dict[str, int] = {}  # events channel -> groups listening

    @property
    def ttl(self) -> float:
        """The entries' TTL: fixed, or following the heartbeat interval."""
        return self._ttl if isinstance(self._ttl, float | int) else self._ttl()

    @property
    def sweep_interval(self) -> float:
        return max(0.2, self.ttl / 4)

    def _key(self, group: str) -> str:
        """The group's name in the presence store, which every service shares."""
        return self._namespace + group

    # -- own connections ------------------------------------------------------------
    async def join(self, group: str, conn: Connection) -> None:
        entry = f"{self._node}/{conn.id}"
        self._local[(group, conn)] = entry
        if await self._presence.join(self._key(group), conn.user, entry, self.ttl):
            await self._announce(group, conn.user, True)

    async def leave(self, group: str, conn: Connection) -> None:
        entry = self._local.pop((group, conn), None)
        if entry is not None and await self._presence.leave(self._key(group), conn.user, entry):
            await self._announce(group, conn.user, False)

    def abandon_entries(self) -> None:
        """Fault injection (tests): stop refreshing this replica's own entries and marking
        it alive, without leaving, as a replica that died would: the others remove its
        entries once its mark expires (or the store expires them after the TTL)."""
        self._local.clear()
        self._abandoned = True

    async def members(self, group: str) -> set[str]:
        return await self._presence.members(self._key(group))

    async def contains(self, group: str, users: list[str]) -> dict[str, bool]:
        return await self._presence.contains(self._key(group), users)

    async def _announce(self, group: str, user: str, present: bool) -> None:
        event = orjson.dumps({"group": group, "user": user, "present": present})
        await self._hub.publish(self._events_channel(group), event, history=False)

    # -- listening ------------------------------------------------------------------
    async def listen_group(self, group: str, conn: Connection) -> None:
        """Tell ``conn`` of every join and leave in ``group`` from now on."""
        first = group not in self._whole
        self._whole.setdefault(group, set()).add(conn)
        await self._follow(group)
        if first:
            try:
                members = await self.members(group)
            except BaseException:
                self.unlisten_group(group, conn)
                raise
            known = self._known.setdefault(group, {})
            for user in members:
                known.setdefault(user, True)

    def unlisten_group(self, group: str, conn: Connection) -> None:
        listeners = self._whole.get(group)
        if listeners is not None:
            listeners.discard(conn)
            if not listeners:
                del self._whole[group]
                self._forget(group)

    async def listen_users(self, group: str, users: list[str], conn: Connection) -> dict[str, bool]:
        """Return whether each user is present now, then tell ``conn`` of their changes.

        Changes that land while the state is read are held for ``conn`` and folded into
        the answer, so it hears neither a stale state nor a change twice. Call
        :meth:`activate` once the answer is queued."""
        pending = self._pending.setdefault(conn, {})
        for user in users:
            self._some.setdefault(group, {}).setdefault(user, set()).add(conn)
        await self._follow(group)
        state = await self.contains(group, users)
        for (pending_group, user), present in pending.items():
            if pending_group == group and user in state:
                state[user] = present
        known = self._known.setdefault(group, {})
        for user, present in state.items():
            if user in known and known[user] != present:
                self._changed(group, user, present)  # tell the others; conn is pending
            known[user] = present
        return state

    def activate(self, conn: Connection) -> None:
        self._pending.pop(conn, None)

    def unlisten_users(self, group: str, users: list[str], conn: Connection) -> None:
        by_user = self._some.get(group, {})
        for user in users:
            listeners = by_user.get(user)
            if listeners is not None:
                listeners.discard(conn)
                if not listeners:
                    del by_user[user]
                    if group not in self._whole:
                        self._known.get(group, {}).pop(user, None)
        if not by_user:
            self._some.pop(group, None)
            self._forget(group)

    def drop(self, conn: Connection) -> None:
        """Forget every listening of a closed connection."""
        self._pending.pop(conn, None)
        for group in list(self._whole):
            if conn in self._whole[group]:
                self.unlisten_group(group, conn)
        for group, by_user in list(self._some.items()):
            users = [u for u, listeners in by_user.items() if conn in listeners]
            if users:
                self.unlisten_users(group, users, conn)

    def _forget(self, group: str) -> None:
        if group in self._whole or group in self._some:
            return
        self._known.pop(group, None)
        self._batches.pop(group, None)
        self._last_flush.pop(group, None)
        flush = self._flushes.pop(group, None)
        if flush is not None:
            flush.cancel()
        channel = self._events_channel(group)
        self._channel_users[channel] -= 1
        if self._channel_users[channel] == 0:
            del self._channel_users[channel]
            subscriber = self._channels.pop(channel)
            task = asyncio.ensure_future(self._hub.unsubscribe(subscriber, channel))
            subscriber.task = task

    async def _follow(self, group: str) -> None:
        """Subscribe to the group's events channel when the first listener arrives."""
        if group in self._known:
            return
        self._known[group] = {}
        channel = self._events_channel(group)
        self._channel_users[channel] = self._channel_users.get(channel, 0) + 1
        if channel not in self._channels:
            subscriber = self._channels[channel] = _EventsSubscriber(self)
            try:
                await self._hub.subscribe_live(subscriber, channel)
            except BaseException:
                del self._channels[channel]
                self._channel_users.pop(channel, None)
                self._known.pop(group, None)
                raise

    def _changed(self, group: str, user: str, present: bool) -> None:
        known = self._known.get(group)
        if known is None or known.get(user) == present:
            return
        whole = self._whole.get(group, set())
        listeners = self._some.get(group, {}).get(user, set())
        if not whole and not listeners:
            return
        was = known.get(user, False)
        known[user] = present
        if whole and self._notify_batch is not None:
            self._queue(group, user, was, present)
            listeners = listeners - whole
        else:
            listeners = listeners | whole
        for conn in listeners:
            pending = self._pending.get(conn)
            if pending is not None:
                pending[(group, user)] = present
            else:
                self._notify(conn, group, user, present)

    def _queue(self, group: str, user: str, was: bool, present: bool) -> None:
        """Hold a change for the group's next batch (see the module's docstring)."""
        batch = self._batches.get(group)
        if batch is None:
            batch = self._batches[group] = {}
            loop = asyncio.get_running_loop()
            due = self._last_flush.get(group, -math.inf) + self._window
            delay = max(0.0, due - loop.time())
            self._flushes[group] = loop.call_later(delay, self._flush, group)
        if user in batch:
            batch[user][1] = present
        else:
            batch[user] = [was, present]

    def _flush(self, group: str) -> None:
        self._flushes.pop(group, None)
        batch = self._batches.pop(group, {})
        self._last_flush[group] = asyncio.get_running_loop().time()
        changes = {user: now for user, (was, now) in batch.items() if was != now}
        if not changes or self._notify_batch is None:
            return
        for conn in list(self._whole.get(group, ())):
            self._notify_batch(conn, group, changes)

    def on_event(self, data: bytes) -> None:
        try:
            event = orjson.loads(data)
            group, user, present = event["group"], event["user"], event["present"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed roster event", extra={"data": data[:200]})
            return
        self._changed(group, user, bool(present))

    # -- background work ------------------------------------------------------------
    async def _refresh_and_sweep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_or_stop(stop, self.sweep_interval)
            if stop.is_set():
                return
            try:
                await self.tick()
            except BackplaneUnavailable as error:
                log.warning("roster sweep failed", extra={"error": str(error)})

    async def tick(self) -> None:
        """One round of the background work (tests call it instead of waiting for it):
        re-assert this replica's entries, then tell listeners what changed."""
        await self._refresh()
        await self._sweep()

    async def _refresh(self) -> None:
        """Refreshing first means a store that lost its data is repaired before the sweep
        could report this replica's users as gone."""
        local = [((g, c), self._key(g), c.user, e) for (g, c), e in self._local.items()]
        entries = [(key, user, entry) for _, key, user, entry in local]
        absent = set(await self._presence.refresh(entries, self.ttl))
        for (group, conn), key, user, entry in local:
            if self._local.get((group, conn)) != entry:
                # It left while the refresh ran: the refresh must not keep it present.
                await self._presence.leave(key, user, entry)
            elif (key, user, entry) in absent:
                await self._announce(group, user, True)  # it had vanished from the store

    async def _sweep(self) -> None:
        for group in list(self._whole):
            members = await self.members(group)
            known = self._known.get(group, {})
            for user in members | {u for u, present in known.items() if present}:
                self._changed(group, user, user in members)
        for group, by_user in list(self._some.items()):
            state = await self.contains(group, list(by_user))
            for user, present in state.items():
                self._changed(group, user, present)

    # -- dead replicas ----------------------------------------------------------------
    async def _keep_alive(self, stop: asyncio.Event) -> None:
        interval, ttl = self._liveness
        while not self._abandoned and not stop.is_set():
            try:
                await self.check_replicas(ttl)
            except BackplaneUnavailable as error:
                log.warning("replica liveness failed", extra={"error": str(error)})
            await wait_or_stop(stop, interval)

    async def check_replicas(self, ttl: float) -> None:
        """Mark this replica alive; remove the entries of those whose mark expired and
        announce their users' leaves."""
        for dead in await self._presence.alive(self._scope, self._node, ttl):
            gone = await self._presence.clear_node(self._scope, dead)
            log.info(
                "removed a dead replica's presence",
                extra={"event": "dead_replica", "node": dead, "users_gone": len(gone)},
            )
            for key, user in gone:
                if key.startswith(self._namespace):
                    await self._announce(key.removeprefix(self._namespace), user, False)

    async def lifecycle(self) -> AsyncIterator[None]:
        # stopped by an event, not cancelled: a cancellation landing in a Redis call can be
        # swallowed, and the app's cleanup would wait for the task forever (background.py)
        runs = {"roster": self._refresh_and_sweep, "roster-liveness": self._keep_alive}
        async with running(runs, stop_timeout=5.0):
            yield
        for flush in self._flushes.values():
            flush.cancel()
        self._flushes.clear()


class _EventsSubscriber:
    """Receives a group events channel from the hub."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self.task: asyncio.Future[bool] | None = None

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        self.roster.on_event(publication.data)

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        return None  # the sweep re-reads every group and user listened to


def add_roster(
    app: web.Application,
    ctx: ServiceContext,
    events_channel: Callable[[str], str],
    notify: Notify,
    notify_batch: NotifyBatch | None = None,
) -> Roster:
    """A roster for this replica, refreshed and swept while the app runs."""
    fixed_ttl = ctx.settings.presence_ttl_seconds
    heartbeat = ctx.heartbeat

    def ttl_from_heartbeat() -> float:
        return 2 * heartbeat.interval + 10.0

    roster = Roster(
        ctx.backplane.presence,
        ctx.hub,
        ctx.settings.node_id,
        fixed_ttl if fixed_ttl > 0 else ttl_from_heartbeat,
        namespace=ctx.spec.name,
        events_channel=events_channel,
        notify=notify,
        notify_batch=notify_batch,
        liveness_interval=ctx.settings.replica_liveness_seconds / 3,
        liveness_ttl=ctx.settings.replica_liveness_seconds,
    )

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        async for state in roster.lifecycle():
            yield state

    app.cleanup_ctx.append(lifecycle)
    return roster
