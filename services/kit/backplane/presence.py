"""The presence interface: groups of users with TTL'd connection entries.

A group (a chat room, or telephony's "everyone online") holds users; a user is present
while at least one of their connections has an unexpired entry. Replicas refresh their
own connections; a dead replica's entries expire after ``ttl``. Group names are the
caller's: services namespace them (see services.kit.roster) so they never meet.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

__all__ = ["Presence", "PresenceEntry"]

# (group, user, connection)
PresenceEntry = tuple[str, str, str]


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
