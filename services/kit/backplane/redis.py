"""Redis backplane: one stream per channel, pub/sub for live delivery, ZSETs for presence.

Keys per channel ``c`` (the ``{c}`` hash tag keeps them on one cluster slot):
``wwws:{c}:m`` hash (epoch, top offset), ``wwws:{c}:s`` stream with entry ids ``<offset>-0``,
and pub/sub channel ``wwws:{c}:p``. Publishing is one Lua script (offset, append, trim,
expire, publish), so offsets are gapless and every replica sees them in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import Backplane, BackplaneUnavailable, Publication, ReadResult

__all__ = ["RedisBackplane"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # per replica; commands are short, so a few dozen carry thousands
POOL_TIMEOUT_SECONDS = 5.0  # then the client gets `unavailable`

# Drop entries older than the age limit (ARGV max age ms; 0 = none). Entries carry their
# publish time in field 't', so the window is count- and age-bounded.
_TRIM_BY_AGE = """
local function trim_by_age(stream, max_age)
  if max_age <= 0 then return end
  local now = redis.call('TIME')
  local cutoff = now[1] * 1000 + math.floor(now[2] / 1000) - max_age
  while true do
    local batch = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    if #batch == 0 then return end
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][4]) >= cutoff then
        redis.call('XTRIM', stream, 'MINID', entry[1])
        return
      end
    end
    local last = tonumber(string.match(batch[#batch][1], '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', (last + 1) .. '-0')
  end
end
"""

_PUBLISH = (
    _TRIM_BY_AGE
    + """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], top .. '-0', 'd', ARGV[1], 't', now_ms)
trim_by_age(KEYS[2], tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], epoch .. ':' .. top .. ':' .. ARGV[1])
return {epoch, top}
"""
)

# ARGV: mode (after|latest|before), offset, limit, new epoch, ttl ms, max age ms
_READ = (
    _TRIM_BY_AGE
    + """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
trim_by_age(KEYS[2], tonumber(ARGV[6]))
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local first = top + 1
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #oldest > 0 then first = tonumber(string.match(oldest[1][1], '^(%d+)')) end
local limit = tonumber(ARGV[3])
local entries = {}
if limit > 0 then
  if ARGV[1] == 'after' then
    entries = redis.call('XRANGE', KEYS[2], (tonumber(ARGV[2]) + 1) .. '-0', '+', 'COUNT', limit)
  elseif ARGV[1] == 'latest' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  else
    entries = redis.call('XREVRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '-', 'COUNT', limit)
  end
end
return {epoch, top, first, entries}
"""
)

# Presence: KEYS[1] the group's ZSET (user -> latest expiry of any of their connections),
# KEYS[2] the user's ZSET in that group (connection -> expiry). Scores are Redis TIME in ms.
_PRESENCE_NOW = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
"""

_PRESENCE_JOIN = (
    _PRESENCE_NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local before = redis.call('ZCARD', KEYS[2])
local expiry = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if before == 0 then return 1 end
return 0
"""
)

_PRESENCE_LEAVE = (
    _PRESENCE_NOW
    + """
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return removed
end
-- the user stays until their longest-lived remaining connection expires
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[1], latest[2], ARGV[1])
return 0
"""
)

# KEYS: (group, user) key pairs; ARGV[1] ttl ms, then user, connection per pair
_PRESENCE_REFRESH = (
    _PRESENCE_NOW
    + """
local expiry = now + tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local user, conn = ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZADD', KEYS[i + 1], 'XX', 'CH', expiry, conn) == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
    redis.call('ZADD', KEYS[i], 'GT', expiry, user)
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  end
end
return 0
"""
)

_PRESENCE_MEMBERS = (
    _PRESENCE_NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
)

_PRESENCE_CONTAINS = (
    _PRESENCE_NOW
    + """
local out = {}
for i, user in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) > now then out[i] = 1 else out[i] = 0 end
end
return out
"""
)


# KEYS[1] the record, KEYS[2..] its guards; ARGV[1] ttl ms, ARGV[2..] field/value pairs
_RECORD_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 2, #KEYS do redis.call('SET', KEYS[i], KEYS[1], 'PX', ARGV[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS as above; ARGV[1] ttl ms, ARGV[2] expected states (comma-separated),
# ARGV[3] '1' to release the guards, ARGV[4..] field/value pairs
_RECORD_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return nil end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return nil end
if #ARGV >= 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == KEYS[1] then
    if ARGV[3] == '1' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('PEXPIRE', KEYS[i], ARGV[1])
    end
  end
end
return redis.call('HGETALL', KEYS[1])
"""


def _record_key(key: str) -> str:
    return f"wwws:record:{key}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs_to_dict(flat: list[bytes]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _stream_keys(channel: str) -> tuple[str, str, str]:
    base = f"wwws:{{{channel}}}"
    return f"{base}:m", f"{base}:s", f"{base}:p"


def _presence_keys(group: str, user: str) -> list[str]:
    base = f"wwws:presence:{{{group}}}"
    return [base, f"{base}:u:{user}"]


class RedisBackplane(Backplane):
    def __init__(
        self,
        url: str,
        history_size: int = 1000,
        history_ttl: float = 86400.0,
        history_max_age: float = 0.0,
    ) -> None:
        super().__init__()
        self._history_max_age_ms = int(history_max_age * 1000)
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000)
        # A blocking pool: a burst of subscribes (a drained replica's clients all coming
        # back) waits for a free connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_SECONDS,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool too
        self._pubsub = self._redis.pubsub()
        self._publish_script = self._redis.register_script(_PUBLISH)
        self._read_script = self._redis.register_script(_READ)
        self._presence_join = self._redis.register_script(_PRESENCE_JOIN)
        self._presence_leave = self._redis.register_script(_PRESENCE_LEAVE)
        self._presence_refresh = self._redis.register_script(_PRESENCE_REFRESH)
        self._presence_members = self._redis.register_script(_PRESENCE_MEMBERS)
        self._presence_contains = self._redis.register_script(_PRESENCE_CONTAINS)
        self._record_create = self._redis.register_script(_RECORD_CREATE)
        self._record_transition = self._redis.register_script(_RECORD_TRANSITION)
        # pub/sub channel name -> channel, for channels we listen to
        self._listening: dict[bytes, str] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wake_reader = asyncio.Event()
        # redis-py's PubSub is not safe for concurrent commands: two first subscribes would
        # each take a pool connection for it, and one would never be given back.
        self._pubsub_lock = asyncio.Lock()
        self.errors = 0

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self.errors += 1
            raise BackplaneUnavailable(str(exc)) from exc

    async def publish(self, channel: str, data: bytes) -> tuple[str, int]:
        meta, stream, pubsub = _stream_keys(channel)
        args = [
            data,
            secrets.token_hex(4),
            self._history_size,
            self._history_ttl_ms,
            pubsub,
            self._history_max_age_ms,
        ]
        epoch, top = await self._call(self._publish_script, [meta, stream], args)
        return epoch.decode(), int(top)

    async def _read(self, channel: str, mode: str, offset: int, limit: int) -> ReadResult:
        meta, stream, _ = _stream_keys(channel)
        args = [
            mode,
            offset,
            limit,
            secrets.token_hex(4),
            self._history_ttl_ms,
            self._history_max_age_ms,
        ]
        epoch, top, first, entries = await self._call(self._read_script, [meta, stream], args)
        publications = [
            Publication(int(entry_id.split(b"-", 1)[0]), fields[1]) for entry_id, fields in entries
        ]
        if mode != "after":
            publications.reverse()
        return ReadResult(epoch.decode(), int(top), int(first), publications)

    async def read(self, channel: str, after: int, limit: int) -> ReadResult:
        return await self._read(channel, "after", after, limit)

    async def read_latest(self, channel: str, limit: int) -> ReadResult:
        return await self._read(channel, "latest", 0, limit)

    async def read_before(self, channel: str, before: int, limit: int) -> ReadResult:
        return await self._read(channel, "before", before, limit)

    # -- live delivery --------------------------------------------------------------
    async def listen(self, channel: str) -> None:
        _, _, name = _stream_keys(channel)
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
                self.errors += 1
                raise BackplaneUnavailable(str(exc)) from exc
            self._ensure_reader()
        try:
            # The SUBSCRIBE reply is what proves later publications will reach us.
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=5)
        except TimeoutError:
            raise BackplaneUnavailable(f"no subscribe confirmation for {channel}") from None

    async def unlisten(self, channel: str) -> None:
        _, _, name = _stream_keys(channel)
        self._forget(channel)
        with contextlib.suppress(RedisError, OSError):
            async with self._pubsub_lock:
                await self._pubsub.unsubscribe(name)

    def _forget(self, channel: str) -> None:
        _, _, name = _stream_keys(channel)
        self._listening.pop(name.encode(), None)
        future = self._confirmed.pop(channel, None)
        if future is not None and not future.done():
            future.cancel()

    def _ensure_reader(self) -> None:
        self._wake_reader.set()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_live(), name="redis-live-reader")

    async def _read_live(self) -> None:
        backoff = 0.1
        while True:
            if not self._pubsub.subscribed:
                self._wake_reader.clear()
                await self._wake_reader.wait()
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                self.errors += 1
                log.warning("redis pub/sub connection lost: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = self._listening.get(message["channel"])
        if channel is None:
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

    # -- presence -------------------------------------------------------------------
    async def presence_join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        keys = _presence_keys(group, user)
        args = [user, conn, int(ttl * 1000)]
        return bool(await self._call(self._presence_join, keys, args))

    async def presence_leave(self, group: str, user: str, conn: str) -> bool:
        keys = _presence_keys(group, user)
        return bool(await self._call(self._presence_leave, keys, [user, conn]))

    async def presence_refresh(self, entries: Iterable[tuple[str, str, str]], ttl: float) -> None:
        batch = list(entries)
        for start in range(0, len(batch), 250):
            keys: list[str] = []
            args: list[Any] = [int(ttl * 1000)]
            for group, user, conn in batch[start : start + 250]:
                keys.extend(_presence_keys(group, user))
                args.extend((user, conn))
            await self._call(self._presence_refresh, keys, args)

    async def presence_members(self, group: str) -> set[str]:
        users = await self._call(self._presence_members, _presence_keys(group, "")[:1], [])
        return {user.decode() for user in users}

    async def presence_contains(self, group: str, users: Iterable[str]) -> dict[str, bool]:
        names = list(users)
        if not names:
            return {}
        found = await self._call(self._presence_contains, _presence_keys(group, "")[:1], names)
        return {name: bool(flag) for name, flag in zip(names, found, strict=True)}

    # -- shared state -----------------------------------------------------------------
    async def record_create(
        self, key: str, fields: dict[str, str], ttl: float, guards: list[str]
    ) -> bool:
        keys = [_record_key(key), *(_record_key(g) for g in guards)]
        args: list[Any] = [int(ttl * 1000)]
        for name, value in fields.items():
            args.extend((name, value))
        return bool(await self._call(self._record_create, keys, args))

    async def record_transition(
        self,
        key: str,
        expect: set[str],
        updates: dict[str, str],
        ttl: float,
        guards: list[str],
        release: bool,
    ) -> dict[str, str] | None:
        keys = [_record_key(key), *(_record_key(g) for g in guards)]
        args: list[Any] = [int(ttl * 1000), ",".join(sorted(expect)), "1" if release else "0"]
        for name, value in updates.items():
            args.extend((name, value))
        found = await self._call(self._record_transition, keys, args)
        return None if found is None else _pairs_to_dict(found)

    async def record_get(self, key: str) -> dict[str, str] | None:
        try:
            found = await self._redis.hgetall(_record_key(key))
        except (RedisError, OSError) as exc:
            self.errors += 1
            raise BackplaneUnavailable(str(exc)) from exc
        return {_text(k): _text(v) for k, v in found.items()} or None

    # -- lifecycle ------------------------------------------------------------------
    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            self.errors += 1
            raise BackplaneUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
