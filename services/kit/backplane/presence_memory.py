"""In-memory presence: the same TTL semantics as Redis, on the state's clock."""

from __future__ import annotations

from collections.abc import Iterable

from .memory_state import MemoryState
from .presence import Presence, PresenceEntry, node_of

__all__ = ["MemoryPresence"]


class MemoryPresence(Presence):
    def __init__(self, state: MemoryState) -> None:
        self._state = state

    def _conns(self, group: str, user: str) -> dict[str, float]:
        """The user's live connections in the group (expired ones dropped); an empty
        result is not stored, so reads leave nothing behind."""
        users = self._state.presence.get(group, {})
        conns = users.get(user, {})
        now = self._state.clock()
        for conn in [c for c, expiry in conns.items() if expiry <= now]:
            del conns[conn]
        if not conns and user in users:
            del users[user]
            if not users:
                del self._state.presence[group]
        return conns

    def _put(self, group: str, user: str, conn: str, ttl: float) -> bool:
        was_absent = not self._conns(group, user)
        users = self._state.presence.setdefault(group, {})
        users.setdefault(user, {})[conn] = self._state.clock() + ttl
        return was_absent

    async def join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        return self._put(group, user, conn, ttl)

    async def leave(self, group: str, user: str, conn: str) -> bool:
        conns = self._conns(group, user)
        if conns.pop(conn, None) is None:
            return False
        self._conns(group, user)  # drops the entry when it was the last connection
        return not conns

    async def refresh(self, entries: Iterable[PresenceEntry], ttl: float) -> list[PresenceEntry]:
        return [entry for entry in entries if self._put(*entry, ttl)]

    async def members(self, group: str) -> set[str]:
        users = list(self._state.presence.get(group, {}))
        return {user for user in users if self._conns(group, user)}

    async def contains(self, group: str, users: Iterable[str]) -> dict[str, bool]:
        return {user: bool(self._conns(group, user)) for user in users}

    async def alive(self, scope: str, node: str, ttl: float) -> list[str]:
        registry = self._state.replicas.setdefault(scope, {})
        now = self._state.clock()
        registry[node] = now + ttl
        return [name for name, expiry in registry.items() if expiry <= now]

    async def clear_node(self, scope: str, node: str) -> list[tuple[str, str]]:
        gone = []
        for group, users in list(self._state.presence.items()):
            for user, conns in list(users.items()):
                owned = [conn for conn in conns if node_of(conn) == node]
                for conn in owned:
                    if await self.leave(group, user, conn):
                        gone.append((group, user))
        self._state.replicas.get(scope, {}).pop(node, None)
        return gone
