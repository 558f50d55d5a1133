"""Redis presence: per group a ZSET of users (score: their latest connection expiry) and
per user a ZSET of connections, scored in Redis's own clock so replicas agree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .presence import Presence, PresenceEntry
from .redis_connection import RedisConnection

__all__ = ["RedisPresence"]

REFRESH_BATCH = 250  # entries per script call: keeps each call short


def _keys(group: str, user: str) -> list[str]:
    base = f"wwws:presence:{{{group}}}"
    return [base, f"{base}:u:{user}"]


class RedisPresence(Presence):
    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection
        script = connection.script
        self._join = script(__package__, "clock.lua", "presence_join.lua")
        self._leave = script(__package__, "clock.lua", "presence_leave.lua")
        self._refresh = script(__package__, "clock.lua", "presence_refresh.lua")
        self._members = script(__package__, "clock.lua", "presence_members.lua")
        self._contains = script(__package__, "clock.lua", "presence_contains.lua")

    async def join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        args = [user, conn, int(ttl * 1000)]
        return bool(await self._redis.run(self._join, _keys(group, user), args))

    async def leave(self, group: str, user: str, conn: str) -> bool:
        return bool(await self._redis.run(self._leave, _keys(group, user), [user, conn]))

    async def refresh(self, entries: Iterable[PresenceEntry], ttl: float) -> list[PresenceEntry]:
        batch = list(entries)
        absent: list[PresenceEntry] = []
        for start in range(0, len(batch), REFRESH_BATCH):
            part = batch[start : start + REFRESH_BATCH]
            keys: list[str] = []
            args: list[Any] = [int(ttl * 1000)]
            for group, user, conn in part:
                keys.extend(_keys(group, user))
                args.extend((user, conn))
            found = await self._redis.run(self._refresh, keys, args)
            absent.extend(part[int(number) - 1] for number in found)
        return absent

    async def members(self, group: str) -> set[str]:
        users = await self._redis.run(self._members, _keys(group, "")[:1], [])
        return {user.decode() for user in users}

    async def contains(self, group: str, users: Iterable[str]) -> dict[str, bool]:
        names = list(users)
        if not names:
            return {}
        found = await self._redis.run(self._contains, _keys(group, "")[:1], names)
        return {name: bool(flag) for name, flag in zip(names, found, strict=True)}
