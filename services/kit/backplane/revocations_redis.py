"""Redis revocations: ``wwws:revoked:<user>`` holds the revocation time (Redis's clock,
ms since the epoch) and expires after ``keep_seconds``."""

from __future__ import annotations

from .redis_connection import RedisConnection
from .revocations import Revocations

__all__ = ["RedisRevocations"]


def _key(user: str) -> str:
    return f"wwws:revoked:{user}"


class RedisRevocations(Revocations):
    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection
        self._revoke = connection.script(__package__, "clock.lua", "revoke.lua")

    async def revoke(self, user: str, keep_seconds: float) -> float:
        now_ms = await self._redis.run(self._revoke, [_key(user)], [int(keep_seconds * 1000)])
        return int(now_ms) / 1000.0

    async def revoked_at(self, user: str) -> float | None:
        value = await self._redis.execute("GET", _key(user))
        return None if value is None else int(value) / 1000.0
