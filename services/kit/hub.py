"""Local fan-out of channel publications to the subscribers of one replica.

The hub listens to a backplane channel once, however many local subscribers it has,
serialises each publication once, and hands the same bytes to every subscriber.
It also makes subscribing race-free: a subscriber that is joining buffers the live
publications until its history read is answered, then receives only offsets after
the ones in that answer, so nothing is lost or delivered twice.

Ephemeral channels (internal events, call signalling) have no stream: their subscribers
join with :meth:`ChannelHub.subscribe_live` and get every publication that arrives from
then on, without offsets, gap detection or history reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from .backplane import NO_EPOCH, Backplane, BackplaneUnavailable, Publication, ReadResult
from .protocol import Since, msg_frame
from .recent_window import RecentWindow

__all__ = ["ChannelHub", "SubscribeResult", "Subscriber"]

log = logging.getLogger(__name__)

# retrying a read the hub must make (a gap, a new epoch) while Redis is unreachable or still
# loading (seconds): the first wait, doubling up to the last
READ_RETRY_FIRST = 0.05
READ_RETRY_MAX = 1.0
# How long a channel's recent window answers subscribers after the last read or live
# publication confirmed it (seconds; 0: always read Redis). See recent_window.py.
RECENT_TRUST_SECONDS = 5.0


class Subscriber(Protocol):
    def deliver(self, channel: str, publication: Publication, frame: bytes) -> bool | None:
        """Take one publication; must not block (enqueue and return). True when a frame
        was queued for a client: the hub counts those (``on_delivered``)."""

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        """The channel restarted under a new epoch; ``result`` is the fresh window."""


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    epoch: str
    offset: int
    recovered: bool
    publications: list[Publication]


@dataclass(eq=False)
class _LocalChannel:
    name: str
    ready: asyncio.Future[None]
    epoch: str | None = None
    last_offset: int | None = None
    # subscriber -> offset of the last publication it was given
    live: dict[Subscriber, int] = field(default_factory=dict)
    # subscribers whose history read is still in flight -> live publications meanwhile
    joining: dict[Subscriber, list[Publication]] = field(default_factory=dict)
    filling: bool = False
    ephemeral: bool = False  # no stream: publications are delivered as they come
    held: list[tuple[str, Publication]] = field(default_factory=list)
    # the newest publications up to last_offset, when known: answers new subscribers
    recent: RecentWindow | None = None

    @property
    def empty(self) -> bool:
        return not self.live and not self.joining


class ChannelHub:
    def __init__(
        self,
        backplane: Backplane,
        namespace: str,
        fill_limit: int = 1000,
        on_fanout: Callable[[Publication, int], None] | None = None,
        on_delivered: Callable[[int], None] | None = None,
        recent_trust_seconds: float = RECENT_TRUST_SECONDS,
    ) -> None:
        self._broker = backplane.broker
        self._prefix = f"{namespace}:"
        self._fill_limit = fill_limit
        self._recent_trust = recent_trust_seconds
        self._channels: dict[str, _LocalChannel] = {}
        self._on_fanout = on_fanout
        # frames queued for clients, counted once per fan-out (not once per frame)
        self._on_delivered = on_delivered or (lambda count: None)
        self._tasks: set[asyncio.Task[None]] = set()
        # kit-wide channels outside the namespace (revocations): full name -> receiver
        self._outside: dict[str, Callable[[Publication], None]] = {}
        self._outside_resync: dict[str, Callable[[], None]] = {}
        self._broker.set_callbacks(self._on_live, self._on_resync)

    def backplane_channel(self, channel: str) -> str:
        return self._prefix + channel

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def busiest(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` channels with the most local subscribers (ephemeral and internal
        ``#`` channels left out), as ``(channel, subscribers)``, busiest first."""
        counts = [
            (name, len(local.live) + len(local.joining))
            for name, local in self._channels.items()
            if not local.ephemeral and not name.startswith("#")
        ]
        counts.sort(key=lambda item: (-item[1], item[0]))
        return counts[:limit]

    async def publish(
        self, channel: str, data: bytes, *, history: bool = True, idempotency_key: str = ""
    ) -> tuple[str, int]:
        """Publish to every replica; ``history=False`` for an ephemeral channel (nothing
        stored, no offset). See :meth:`Broker.publish` for ``idempotency_key``."""
        return await self._broker.publish(
            self.backplane_channel(channel),
            data,
            history=history,
            idempotency_key=idempotency_key,
        )

    async def listen_outside(
        self,
        channel: str,
        receive: Callable[[Publication], None],
        resync: Callable[[], None] | None = None,
    ) -> None:
        """Hear a kit-wide ephemeral channel (its full backplane name, outside the
        service's namespace) for the replica's life: ``receive`` gets each publication,
        ``resync`` is called when the live feed reconnected (some may have been missed)."""
        self._outside[channel] = receive
        if resync is not None:
            self._outside_resync[channel] = resync
        await self._broker.listen(channel)

    async def subscribe_live(self, subscriber: Subscriber, channel: str) -> None:
        """Join an ephemeral channel: every publication from now on, nothing older."""
        local = await self._attach(channel, subscriber)
        local.ephemeral = True
        if subscriber in local.joining and self._channels.get(channel) is local:
            del local.joining[subscriber]
            local.live[subscriber] = 0

    async def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        since: Since | None,
        window: int,
        before_live: Callable[[SubscribeResult], None],
    ) -> SubscribeResult:
        """Join ``channel``: read what ``since`` missed (or the latest ``window``), call
        ``before_live`` with it (to queue the reply), then flush what arrived meanwhile."""
        local = await self._attach(channel, subscriber)
        size = min(window, self._fill_limit)
        result = self._read_recent(local, since, size)
        if result is None:
            try:
                result = await self._read_for(channel, since, window)
            except BaseException:
                local.joining.pop(subscriber, None)
                await self._detach_if_empty(local)
                raise
            if local.epoch is None or local.epoch == NO_EPOCH:
                local.epoch = result.epoch
            if local.last_offset is None:
                local.last_offset = result.offset
            if since is None:
                self._remember(local, result, size)
        if subscriber not in local.joining or self._channels.get(channel) is not local:
            return result  # unsubscribed meanwhile
        buffered = local.joining.pop(subscriber)
        before_live(result)
        position = result.offset
        delivered = 0
        for publication in buffered:
            if publication.offset > position:
                frame = msg_frame(channel, *_parts(publication))
                delivered += bool(subscriber.deliver(channel, publication, frame))
                position = publication.offset
        local.live[subscriber] = position
        if delivered:
            self._on_delivered(delivered)
        return result

    async def unsubscribe(self, subscriber: Subscriber, channel: str) -> bool:
        local = self._channels.get(channel)
        if local is None:
            return False
        found = local.live.pop(subscriber, None) is not None
        found = local.joining.pop(subscriber, None) is not None or found
        await self._detach_if_empty(local)
        return found

    async def history(self, channel: str, before: int | None, limit: int) -> ReadResult:
        """Up to ``limit`` publications older than ``before`` (None: the newest)."""
        name = self.backplane_channel(channel)
        return await self._broker.history(name, since=before, limit=limit, reverse=True)

    # -- internals ------------------------------------------------------------------
    def _read_recent(
        self, local: _LocalChannel, since: Since | None, size: int
    ) -> SubscribeResult | None:
        """The answer to a subscriber from the channel's recent window, when it holds
        one that is current and covers what is asked; None: read the stream."""
        recent = local.recent
        if recent is None or local.filling or local.epoch is None:
            return None
        if recent.top != local.last_offset or recent.size != size:
            return None
        if time.monotonic() - recent.checked_at > self._recent_trust:
            local.recent = None  # unconfirmed for too long: the next read renews it
            return None
        if since is None:
            return SubscribeResult(local.epoch, recent.top, False, recent.latest())
        if since.epoch != local.epoch or local.epoch == NO_EPOCH:
            return None
        missed = recent.after(since.offset)
        if missed is None:
            return None
        return SubscribeResult(local.epoch, recent.top, True, missed)

    def _remember(self, local: _LocalChannel, read: SubscribeResult, size: int) -> None:
        """Keep a read of the latest window as the channel's recent window, if it is what
        the channel has delivered up to now (a live publication may have overtaken it)."""
        if self._recent_trust <= 0 or local.filling or local.ephemeral:
            return
        if read.epoch != local.epoch or read.offset != local.last_offset:
            return
        local.recent = RecentWindow.from_read(
            size, read.offset, read.publications, time.monotonic()
        )

    async def _attach(self, channel: str, subscriber: Subscriber) -> _LocalChannel:
        local = self._channels.get(channel)
        if local is None:
            local = _LocalChannel(channel, asyncio.get_running_loop().create_future())
            self._channels[channel] = local
            local.joining[subscriber] = []
            try:
                await self._broker.listen(self.backplane_channel(channel))
            except BaseException as exc:
                self._channels.pop(channel, None)
                local.ready.set_exception(exc)
                local.ready.exception()  # mark retrieved; joiners re-raise it below
                raise
            local.ready.set_result(None)
            return local
        local.joining[subscriber] = []
        await asyncio.shield(local.ready)
        return local

    async def _detach_if_empty(self, local: _LocalChannel) -> None:
        if local.empty and self._channels.get(local.name) is local:
            del self._channels[local.name]
            await self._broker.unlisten(self.backplane_channel(local.name))

    async def _read_for(self, channel: str, since: Since | None, window: int) -> SubscribeResult:
        name = self.backplane_channel(channel)
        if since is not None:
            found = await self._broker.history(name, since=since.offset, limit=self._fill_limit)
            complete = len(found.publications) == found.top - since.offset
            # NO_EPOCH: the client subscribed before the channel had a stream; the stream
            # created since then is the one it was following.
            same = since.epoch in (found.epoch, NO_EPOCH)
            if same and found.covers(since.offset) and complete:
                return SubscribeResult(found.epoch, found.top, True, found.publications)
            if not same and found.epoch != NO_EPOCH:
                # The client's stream is gone (Redis lost its data) and it has seen nothing
                # of the one that replaced it: hand that one out whole, from its first
                # publication, rather than only its latest window (recovered: false still
                # tells it about what the old stream took with it).
                fresh = await self._broker.history(name, since=0, limit=self._fill_limit)
                whole = fresh.covers(0) and len(fresh.publications) == fresh.top
                if fresh.epoch == found.epoch and whole:
                    return SubscribeResult(fresh.epoch, fresh.top, False, fresh.publications)
        latest = await self._broker.history(name, limit=window, reverse=True)
        return SubscribeResult(latest.epoch, latest.top, False, latest.publications)

    def _on_live(self, name: str, epoch: str, publication: Publication) -> None:
        receive = self._outside.get(name)
        if receive is not None:
            receive(publication)
            return
        local = self._channels.get(name.removeprefix(self._prefix))
        if local is None or not name.startswith(self._prefix):
            return
        if publication.ephemeral:
            self._fan_out_ephemeral(local, publication)
            return
        if local.filling:
            local.held.append((epoch, publication))
            return
        if local.epoch == NO_EPOCH:
            local.epoch = epoch  # the channel's first publication created its stream
        elif local.epoch is not None and epoch != local.epoch:
            # The stream was lost and restarted. Held like a gap, and handled by the one
            # fill task: two restarts at once would each hand out part of the new stream.
            local.filling = True
            local.recent = None
            local.held.append((epoch, publication))
            self._spawn(self._fill_gap(local))
            return
        if local.last_offset is not None:
            if publication.offset <= local.last_offset:
                return  # already delivered (overlap of a read and the live feed)
            if publication.offset > local.last_offset + 1:
                local.filling = True
                local.held.append((epoch, publication))
                self._spawn(self._fill_gap(local))
                return
        self._fan_out(local, publication)

    def _fan_out(self, local: _LocalChannel, publication: Publication) -> None:
        local.last_offset = publication.offset
        recent = local.recent
        if recent is not None and not recent.extend(publication, time.monotonic()):
            local.recent = None
        for pending in local.joining.values():
            pending.append(publication)
        if not local.live:
            return
        frame = msg_frame(local.name, *_parts(publication))  # serialised once per replica
        delivered = 0
        offset = publication.offset
        live = local.live
        for subscriber, position in live.items():
            if offset > position:
                live[subscriber] = offset
                if subscriber.deliver(local.name, publication, frame):
                    delivered += 1
        self._on_delivered(delivered)
        if self._on_fanout is not None:
            self._on_fanout(publication, delivered)

    def _fan_out_ephemeral(self, local: _LocalChannel, publication: Publication) -> None:
        if not local.live:
            return
        frame = msg_frame(local.name, *_parts(publication))
        delivered = 0
        for subscriber in local.live:
            if subscriber.deliver(local.name, publication, frame):
                delivered += 1
        self._on_delivered(delivered)

    async def _fill_gap(self, local: _LocalChannel) -> None:
        """Live delivery skipped offsets (a lost pub/sub message): read them from the stream."""
        delay = READ_RETRY_FIRST
        try:
            while True:
                after = local.last_offset or 0
                try:
                    found = await self._broker.history(
                        self.backplane_channel(local.name), since=after, limit=self._fill_limit
                    )
                except BackplaneUnavailable:
                    # Not given up: what is held would be replayed into the same gap at
                    # once, a busy loop while Redis is away.
                    if self._channels.get(local.name) is not local:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, READ_RETRY_MAX)
                    continue
                if local.epoch == NO_EPOCH:
                    local.epoch = found.epoch
                if local.epoch is not None and found.epoch != local.epoch:
                    # still `filling`: live publications are held until it is done
                    await self._restart_epoch(local, found.epoch)
                    return
                for publication in found.publications:
                    if publication.offset == (local.last_offset or 0) + 1:
                        self._fan_out(local, publication)
                if not found.covers(after) or (local.last_offset or 0) >= found.top:
                    if (local.last_offset or 0) < found.top:
                        # Older than the history window: jump forward, subscribers learn of
                        # the gap from the offsets and can resubscribe with `since`.
                        local.last_offset = found.top
                        local.recent = None
                    break
        except Exception:
            log.exception("could not fill a gap on %s", local.name)
        finally:
            local.filling = False
            held, local.held = local.held, []
            for epoch, publication in held:
                self._on_live(self.backplane_channel(local.name), epoch, publication)

    async def _restart_epoch(self, local: _LocalChannel, epoch: str) -> None:
        """The stream was lost and restarted: offsets begin again under a new epoch.

        Each live subscriber is re-subscribed as if it had asked with its old position,
        which the new epoch cannot satisfy, so it receives ``recovered: false`` and the
        new stream: the gap is announced, never silent. Runs only inside :meth:`_fill_gap`
        (one per channel at a time), with live publications held until it is done.
        """
        if local.epoch == epoch:
            return
        log.warning("channel %s changed epoch %s -> %s", local.name, local.epoch, epoch)
        local.epoch = epoch
        local.last_offset = None
        local.recent = None
        subscribers = list(local.live)
        local.live.clear()
        for subscriber in subscribers:
            local.joining[subscriber] = []
        # The read must happen: until it does, the subscribers wait in `joining` and get
        # nothing. Right after Redis lost its data it may still be loading or unreachable
        # (the restart that lost it), so keep trying while the channel has subscribers.
        delay = READ_RETRY_FIRST
        while True:
            try:
                result = await self._read_for(local.name, None, self._fill_limit)
                break
            except BackplaneUnavailable:
                if self._channels.get(local.name) is not local or not local.joining:
                    return  # nobody is waiting any more
                log.warning("channel %s: reading the new epoch failed; retrying", local.name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, READ_RETRY_MAX)
        local.epoch = result.epoch  # the stream as read, should it have changed again
        local.last_offset = result.offset
        for subscriber in subscribers:
            if subscriber not in local.joining:
                continue  # unsubscribed while the read was in flight
            buffered = local.joining.pop(subscriber)
            subscriber.resubscribed(local.name, result)
            position = result.offset
            for publication in buffered:
                if publication.offset > position:
                    frame = msg_frame(local.name, *_parts(publication))
                    self._on_delivered(
                        int(bool(subscriber.deliver(local.name, publication, frame)))
                    )
                    position = publication.offset
            local.live[subscriber] = position

    def _on_resync(self, name: str) -> None:
        outside = self._outside_resync.get(name)
        if outside is not None:
            outside()
            return
        local = self._channels.get(name.removeprefix(self._prefix))
        if local is None or local.ephemeral or not name.startswith(self._prefix):
            return
        # the live feed reconnected: what Redis holds now may not be what was delivered
        # (a failover, a restart that lost data), so the window is read again
        local.recent = None
        if not local.filling:
            local.filling = True
            self._spawn(self._fill_gap(local))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _parts(publication: Publication) -> tuple[int, bytes]:
    return publication.offset, publication.data
