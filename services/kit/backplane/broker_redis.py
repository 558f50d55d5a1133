"""Redis broker: one stream per channel, pub/sub for live delivery.

Keys per channel ``c`` (the ``{c}`` hash tag keeps them on one cluster slot):
``wwws:{c}:m`` hash (epoch, top offset), ``wwws:{c}:s`` stream with entry ids ``<offset>-0``,
``wwws:{c}:i`` hash of the idempotency keys of the entries in the window (key -> offset),
and pub/sub channel ``wwws:{c}:p``.
Publishing is one Lua script (offset, append, trim, expire, publish), so offsets are
gapless and every replica sees them in the same order. An ephemeral publication is a
plain PUBLISH on the same pub/sub channel and leaves nothing in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from redis.exceptions import RedisError

from .broker import (
    EPHEMERAL_OFFSET,
    NO_EPOCH,
    BackplaneUnavailable,
    Broker,
    Publication,
    ReadResult,
    check_offset,
)
from .redis_connection import RedisConnection

__all__ = ["PROBE_SECONDS", "RedisBroker", "idempotency_keys", "stream_keys"]

log = logging.getLogger(__name__)

#: how long one read of the pub/sub connection waits for a message
LIVE_READ_SECONDS = 1.0

# The live feed proves itself this often: a probe published through the command pool (to
# the primary) must come back on the pub/sub connection. When PROBE_MISSES in a row do
# not (a connection that carries nothing yet never closes, a subscription on a Redis the
# primary's publications do not reach), the pub/sub connection is opened again, through
# Sentinel where configured, and the resubscription reads what was missed from the
# streams. Three misses, not one: a replica busy for a few seconds is not a lost feed.
PROBE_SECONDS = 5.0
PROBE_MISSES = 3


def stream_keys(channel: str) -> tuple[str, str, str]:
    """The channel's hash, stream and pub/sub channel names."""
    base = f"wwws:{{{channel}}}"
    return f"{base}:m", f"{base}:s", f"{base}:p"


def idempotency_keys(channel: str) -> str:
    """The hash of the channel's idempotency keys."""
    return f"wwws:{{{channel}}}:i"


class RedisBroker(Broker):
    def __init__(
        self,
        connection: RedisConnection,
        history_size: int = 1000,
        history_ttl: float = 86400.0,
        history_max_age: float = 0.0,
    ) -> None:
        super().__init__()
        self._redis = connection
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000)
        self._history_max_age_ms = int(history_max_age * 1000)
        self._publish = connection.script(__package__, "window.lua", "publish.lua")
        self._history = connection.script(__package__, "window.lua", "history.lua")
        self._confirm = connection.script(__package__, "confirm.lua")
        self._pubsub = connection.client.pubsub()
        # pub/sub channel name -> channel, for channels we listen to
        self._listening: dict[bytes, str] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wake_reader = asyncio.Event()
        # redis-py's PubSub is not safe for concurrent commands: two first subscribes would
        # each take a pool connection for it, and one would never be given back.
        self._pubsub_lock = asyncio.Lock()
        self._probe_seconds = PROBE_SECONDS
        self._probe_channel = b"wwws:probe:%b" % secrets.token_hex(8).encode()  # its own
        self._probes_seen = 0  # the highest probe number heard back
        self._prober: asyncio.Task[None] | None = None
        # the prober is stopped by this, not cancelled: redis-py can swallow a
        # cancellation that lands as a call completes, and close() would wait forever
        self._stopping = asyncio.Event()
        self._reopen_pubsub = False  # set by the prober, acted on by the reader
        #: pub/sub connections opened again because probes did not come back
        self.pubsub_reopened = 0

    async def publish(
        self, channel: str, data: bytes, *, history: bool = True, idempotency_key: str = ""
    ) -> tuple[str, int]:
        meta, stream, pubsub = stream_keys(channel)
        if not history:
            message = b"%b:%d:%b" % (NO_EPOCH.encode(), EPHEMERAL_OFFSET, data)
            await self._redis.execute("PUBLISH", pubsub, message)
            return NO_EPOCH, EPHEMERAL_OFFSET
        keys = [meta, stream, idempotency_keys(channel)]
        args = [
            data,
            secrets.token_hex(4),
            self._history_size,
            self._history_ttl_ms,
            pubsub,
            self._history_max_age_ms,
            idempotency_key,
        ]
        durable = self._redis.durable_ack
        if not durable.replicas:
            epoch, top, _ = await self._redis.run(self._publish, keys, [*args, "1"])
            return epoch.decode(), int(top)
        return await self._publish_durably(data, keys, [*args, "0"], pubsub)

    async def _publish_durably(
        self, data: bytes, keys: list[str], args: list[Any], pubsub: str
    ) -> tuple[str, int]:
        """Store, wait until ``durable_ack.replicas`` replicas have it (WAIT, on the same
        connection: a pipeline), and only then let readers see it (the stream's
        ``durable`` mark, which history reads stop at), deliver it live and acknowledge
        it. A publication nobody saw, live or in a read, and nobody was told is stored
        cannot reappear under the same offset with other content after a failover: the
        promoted replica has every acknowledged one, and no reader has one it lacks."""
        durable = self._redis.durable_ack
        client = self._redis.client
        async with client.pipeline(transaction=False) as pipe:
            await self._publish(keys=keys, args=args, client=pipe)  # queued, not sent yet
            pipe.execute_command("WAIT", durable.replicas, durable.timeout_ms)
            stored, replicated = await self._redis.call(pipe.execute())
        epoch, top = stored[0].decode(), int(stored[1])
        if int(replicated) < durable.replicas:
            raise BackplaneUnavailable(
                f"publication held by {int(replicated)} of {durable.replicas} replica(s) "
                f"after {durable.timeout_ms} ms: not acknowledged"
            )
        message = b"%b:%d:%b" % (epoch.encode(), top, data)
        # Through the pool that stored it and waited, not the pipelined connection: that
        # one finds the primary on its own and, across a failover, may reach another
        # server, where the mark would not rise (history reads stop at it) and the live
        # message would reach no replica's pub/sub.
        confirm = self._confirm(keys=[keys[0]], args=[epoch, top, pubsub, message], client=client)
        await self._redis.call(confirm)
        return epoch, top

    async def history(
        self, channel: str, *, since: int | None = None, limit: int, reverse: bool = False
    ) -> ReadResult:
        check_offset(since)
        meta, stream, _ = stream_keys(channel)
        if reverse:
            bound = "" if since is None else str(since)
            if since is not None and since <= 1:
                limit = 0  # nothing is older than offset 1
        else:
            bound = str((since or 0) + 1)
        args = [bound, max(limit, 0), "1" if reverse else "0", self._history_max_age_ms]
        epoch, top, first, entries = await self._redis.run(self._history, [meta, stream], args)
        publications = [
            Publication(int(entry_id.split(b"-", 1)[0]), fields[1]) for entry_id, fields in entries
        ]
        if reverse:
            publications.reverse()
        return ReadResult(epoch.decode(), int(top), int(first), publications)

    # -- live delivery --------------------------------------------------------------
    async def listen(self, channel: str) -> None:
        _, _, name = stream_keys(channel)
        loop = asyncio.get_running_loop()
        confirmed = self._confirmed.get(channel)
        if confirmed is None:
            confirmed = self._confirmed[channel] = loop.create_future()
            self._listening[name.encode()] = channel
            try:
                async with self._pubsub_lock:
                    await self._pubsub.subscribe(name)
            except (RedisError, OSError) as exc:
                self._forget(channel)
                raise BackplaneUnavailable(str(exc)) from exc
            self._ensure_reader()
        try:
            # The SUBSCRIBE reply is what proves later publications will reach us.
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=5)
        except TimeoutError:
            raise BackplaneUnavailable(f"no subscribe confirmation for {channel}") from None

    async def unlisten(self, channel: str) -> None:
        _, _, name = stream_keys(channel)
        self._forget(channel)
        with contextlib.suppress(RedisError, OSError):
            async with self._pubsub_lock:
                await self._pubsub.unsubscribe(name)

    def _forget(self, channel: str) -> None:
        _, _, name = stream_keys(channel)
        self._listening.pop(name.encode(), None)
        future = self._confirmed.pop(channel, None)
        if future is not None and not future.done():
            future.cancel()

    def _ensure_reader(self) -> None:
        self._wake_reader.set()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_live(), name="redis-live-reader")
        running = self._prober is not None and not self._prober.done()
        if self._probe_seconds > 0 and not running and not self._stopping.is_set():
            self._prober = asyncio.create_task(self._probe_live(), name="redis-live-prober")

    async def _read_live(self) -> None:
        backoff = 0.1
        loop = asyncio.get_running_loop()
        empty_at_once = 0  # reads in a row that answered "no message" without waiting
        while True:
            if not self._pubsub.subscribed:
                self._wake_reader.clear()
                await self._wake_reader.wait()
                continue
            started = loop.time()
            lost: BaseException | str | None = None
            try:
                message = await self._pubsub.get_message(timeout=LIVE_READ_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # RedisError and OSError, and RuntimeError: redis-py's health-check PING
                # on a connection uvloop already closed. Whatever it is, the reader must
                # go on: nothing else restarts it, and every channel would go quiet.
                lost, message = exc, None
            # A connection that died (a vanished Redis: the keepalive's ETIMEDOUT) makes
            # redis-py answer None at once, forever, without ever yielding to the loop:
            # measured, 100,000 reads in 2 s and the replica frozen until the next health
            # check. Once is a health-check reply; twice in a row is that.
            instant = message is None and loop.time() - started < LIVE_READ_SECONDS / 2
            empty_at_once = empty_at_once + 1 if instant and lost is None else 0
            if empty_at_once >= 2:
                lost = "reads return at once"
            if lost is not None:
                empty_at_once = 0
                log.warning("redis pub/sub connection lost: %s", lost)
                await self._drop_pubsub_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if message is not None:
                try:
                    self._handle(message)
                except Exception:
                    # one bad message must not end the reader: nothing would restart it
                    # for the channels already listened to, and they would go quiet
                    log.exception("handling a pub/sub message failed")
            if self._reopen_pubsub:
                await self._reopen()

    async def _reopen(self) -> None:
        """Close the pub/sub connection (in the reader, which owns it): the next read opens
        a new one, asking Sentinel for the primary again, and resubscribes everything;
        each channel's `subscribe` reply then starts a read of what was missed."""
        self._reopen_pubsub = False
        self.pubsub_reopened += 1
        log.warning("redis pub/sub carries no probes: opening it again")
        await self._drop_pubsub_connection()

    async def _drop_pubsub_connection(self) -> None:
        """Close the pub/sub connection: the next read opens a new one and resubscribes."""
        connection = self._pubsub.connection
        if connection is not None:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await connection.disconnect()

    async def _probe_live(self) -> None:
        """Publish a numbered probe to this broker's own channel every probe interval and
        check that the previous one came back (see PROBE_SECONDS)."""
        channel = self._probe_channel
        number = 0  # of the last probe published
        pending = 0  # the probe published last round, 0 if none could be
        misses = 0
        while not self._stopping.is_set():
            if pending:
                misses = 0 if self._probes_seen >= pending else misses + 1
                if misses >= PROBE_MISSES:
                    misses = 0
                    self._reopen_pubsub = True
            pending = 0
            try:
                if channel not in self._pubsub.channels:
                    async with self._pubsub_lock:
                        await self._pubsub.subscribe(channel)
                number += 1
                await self._redis.execute("PUBLISH", channel, b"%d" % number)
                pending = number
            except (BackplaneUnavailable, RedisError, OSError):
                misses = 0  # Redis is away: the reader's own reconnects deal with that
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._probe_seconds)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = self._listening.get(message["channel"])
        if channel is None:
            # looked at only here, off the path of the channels' own publications
            if message["type"] == "message" and message["channel"] == self._probe_channel:
                self._probes_seen = max(self._probes_seen, int(message["data"]))
            return
        if message["type"] == "subscribe":
            future = self._confirmed.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            else:
                # A re-subscribe after a reconnect: publications may have been missed.
                self._resync(channel)
        elif message["type"] == "message":
            epoch, offset, data = message["data"].split(b":", 2)
            self._deliver(channel, epoch.decode(), Publication(int(offset), data))

    async def close(self) -> None:
        self._stopping.set()
        if self._prober is not None:
            _, late = await asyncio.wait({self._prober}, timeout=2)
            for task in late:
                task.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
