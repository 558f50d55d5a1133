"""Backplanes for the contract tests, with the faults a test may inject into their store:
memory replicas share one MemoryState, Redis replicas one real Redis."""

from __future__ import annotations

from typing import Any

import redis

from services.kit.backplane import Backplane, MemoryBackplane, MemoryState, RedisBackplane
from services.kit.backplane.broker_redis import idempotency_keys, stream_keys


class BackplaneFactory:
    """``factory(**options)`` makes one replica's backplane; all share one store."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url
        self.state = MemoryState()
        if redis_url is not None:
            self.client().flushdb()

    @property
    def kind(self) -> str:
        return "memory" if self.redis_url is None else "redis"

    def __call__(self, **options: Any) -> Backplane:
        if self.redis_url is None:
            return MemoryBackplane(self.state, **options)
        return RedisBackplane(self.redis_url, **options)

    def client(self) -> redis.Redis:
        assert self.redis_url is not None
        return redis.Redis.from_url(self.redis_url)

    def flush(self) -> None:
        """Lose every stream and presence entry, as a Redis restarted without AOF."""
        if self.redis_url is None:
            self.state.flush()
        else:
            self.client().flushall()

    def stored(self) -> list[str]:
        """What the store holds for channels and groups: Redis keys, or the memory
        state's streams and groups (not the replicas' liveness registry, which every
        running replica keeps)."""
        if self.redis_url is None:
            return sorted([*self.state.streams, *self.state.presence])
        keys = (key.decode() for key in self.client().keys("*"))
        return sorted(key for key in keys if not key.startswith("wwws:replicas:"))

    def idempotency_key_count(self, channel: str) -> int:
        """How many idempotency keys the store keeps for ``channel``."""
        if self.redis_url is None:
            stream = self.state.streams.get(channel)
            return 0 if stream is None else len(stream.idempotency)
        return int(self.client().hlen(idempotency_keys(channel)))

    def stored_values(self) -> list[bytes]:
        """Every value the store holds (Redis: of strings, hashes, sets, zsets, streams),
        to look for what must not be stored."""
        if self.redis_url is None:
            return [p.data for stream in self.state.streams.values() for p in stream.entries]
        client = self.client()
        values: list[bytes] = []
        for key in client.keys("*"):
            kind = client.type(key).decode()
            if kind == "string":
                values.append(client.get(key))
            elif kind == "hash":
                values.extend(client.hgetall(key).values())
            elif kind == "zset":
                values.extend(client.zrange(key, 0, -1))
            elif kind == "set":
                values.extend(client.smembers(key))
            elif kind == "stream":
                values.extend(v for _, fields in client.xrange(key) for v in fields.values())
            else:
                raise AssertionError(f"unexpected {kind} at {key!r}")
        return values

    def append_without_delivery(self, channel: str, data: bytes) -> int:
        """Store a publication whose live message is lost (as after a dropped connection)."""
        if self.redis_url is None:
            return self.state.append_without_delivery(channel, data)
        meta, stream, _ = stream_keys(channel)
        client = self.client()
        offset = int(client.hincrby(meta, "top", 1))
        client.xadd(stream, {"d": data, "t": 0}, id=f"{offset}-0")
        return offset
