"""The presence interface: groups of users with TTL'd connection entries.

A group (a chat room, or telephony's "everyone online") holds users; a user is present
while at least one of their connections has an unexpired entry. Replicas refresh their
own connections; a dead replica's entries expire after ``ttl``, or sooner: replicas mark
themselves alive in their service's registry every few seconds (:meth:`Presence.alive`),
and a survivor removes the entries of a replica whose mark expired
(:meth:`Presence.clear_node`). A connection id is ``<node>/<id>``: the node that owns the
entry. Group names are the caller's: services namespace them (see services.kit.roster)
so they never meet.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

__all__ = ["Presence", "PresenceEntry", "node_of"]

# (group, user, connection)
PresenceEntry = tuple[str, str, str]


def node_of(conn: str) -> str:
    """The replica that owns an entry: a connection id is ``<node>/<id>``."""
    return conn.partition("/")[0]


class Presence(abc.ABC):
    @abc.abstractmethod
    async def join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        """Add or refresh ``conn`` of ``user``; True when ``user`` was not present before."""

    @abc.abstractmethod
    async def leave(self, group: str, user: str, conn: str) -> bool:
        """Remove ``conn``; True when it was ``user``'s last connection in ``group``."""

    @abc.abstractmethod
    async def refresh(self, entries: Iterable[PresenceEntry], ttl: float) -> list[PresenceEntry]:
        """Re-assert the entries (create them again if the store lost them, e.g. Redis
        lost its data); return those whose user was absent from the group before."""

    @abc.abstractmethod
    async def members(self, group: str) -> set[str]:
        """The users present in ``group``."""

    @abc.abstractmethod
    async def contains(self, group: str, users: Iterable[str]) -> dict[str, bool]:
        """Whether each of ``users`` is present in ``group``."""

    @abc.abstractmethod
    async def alive(self, scope: str, node: str, ttl: float) -> list[str]:
        """Mark ``node`` alive in ``scope``'s registry (a service's replicas) for ``ttl``;
        return the nodes of ``scope`` whose mark expired (dead replicas)."""

    @abc.abstractmethod
    async def clear_node(self, scope: str, node: str) -> list[tuple[str, str]]:
        """Remove every entry ``node`` owns, and ``node`` from ``scope``'s registry; return
        the (group, user) pairs whose user is absent now."""
