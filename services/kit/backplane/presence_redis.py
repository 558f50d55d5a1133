"""Redis presence: per group a ZSET of users (score: their latest connection expiry) and
per user a ZSET of connections, scored in Redis's own clock so replicas agree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .presence import Presence, PresenceEntry, node_of
from .redis_connection import RedisConnection
from .script_batch import ScriptBatch

__all__ = ["RedisPresence"]

REFRESH_BATCH = 250  # entries per script call: keeps each call short
JOIN_BATCH = 250  # joins (or leaves) of one loop iteration per script call
CLEAR_BATCH = 500  # a dead replica's entries removed per script call


def _keys(group: str, user: str) -> list[str]:
    base = f"wwws:presence:{{{group}}}"
    return [base, f"{base}:u:{user}"]


def _node_index(node: str) -> str:
    """The set of a replica's entries (``group \x1f user \x1f conn``)."""
    return f"wwws:presence:node:{node}"


def _registry(scope: str) -> str:
    return f"wwws:replicas:{scope}"


class RedisPresence(Presence):
    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection
        script = connection.script
        # joins and leaves of one loop iteration go as one script call (script_batch.py)
        self._join = ScriptBatch(
            connection, script(__package__, "clock.lua", "presence_join.lua"), JOIN_BATCH
        )
        self._leave = ScriptBatch(
            connection, script(__package__, "clock.lua", "presence_leave.lua"), JOIN_BATCH
        )
        self._refresh = script(__package__, "clock.lua", "presence_refresh.lua")
        self._members = script(__package__, "clock.lua", "presence_members.lua")
        self._contains = script(__package__, "clock.lua", "presence_contains.lua")
        self._alive = script(__package__, "clock.lua", "replica_alive.lua")
        self._clear = script(__package__, "clock.lua", "replica_clear.lua")

    async def join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        keys = [*_keys(group, user), _node_index(node_of(conn))]
        args = [user, conn, int(ttl * 1000), group]
        return bool(await self._join.call(keys, args))

    async def leave(self, group: str, user: str, conn: str) -> bool:
        keys = [*_keys(group, user), _node_index(node_of(conn))]
        return bool(await self._leave.call(keys, [user, conn, group]))

    async def refresh(self, entries: Iterable[PresenceEntry], ttl: float) -> list[PresenceEntry]:
        batch = list(entries)
        absent: list[PresenceEntry] = []
        for start in range(0, len(batch), REFRESH_BATCH):
            part = batch[start : start + REFRESH_BATCH]
            keys: list[str] = []
            args: list[Any] = [int(ttl * 1000)]
            for group, user, conn in part:
                keys.extend((*_keys(group, user), _node_index(node_of(conn))))
                args.extend((user, conn, group))
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

    async def alive(self, scope: str, node: str, ttl: float) -> list[str]:
        args = [node, int(ttl * 1000)]
        expired = await self._redis.run(self._alive, [_registry(scope)], args)
        return [name.decode() for name in expired]

    async def clear_node(self, scope: str, node: str) -> list[tuple[str, str]]:
        keys = [_node_index(node), _registry(scope)]
        gone: list[tuple[str, str]] = []
        while True:
            left, *pairs = await self._redis.run(self._clear, keys, [node, CLEAR_BATCH])
            names = [name.decode() for name in pairs]
            gone.extend(zip(names[::2], names[1::2], strict=True))
            if int(left) == 0:
                return gone
