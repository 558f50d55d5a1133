"""The backplane interface: ordered channel streams with offsets, live delivery, presence.

One process subscribes (``listen``) to a channel once, however many local clients want
it; the hub fans publications out. Implementations: memory (one process) and Redis.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "Backplane",
    "BackplaneUnavailable",
    "LiveCallback",
    "Publication",
    "ReadResult",
    "ResyncCallback",
]


class BackplaneUnavailable(Exception):
    """The backplane cannot be reached; clients get ``unavailable`` and may retry."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One entry of a channel stream. ``data`` is the JSON of the payload object."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A window of a channel stream read in one atomic step.

    ``top`` is the offset of the newest publication (0 for an empty stream) and
    ``first`` the oldest still in history (``top + 1`` when the history is empty).
    """

    epoch: str
    top: int
    first: int
    publications: list[Publication]

    def covers(self, after: int) -> bool:
        """True when every publication after ``after`` up to ``top`` is in this history."""
        return after <= self.top and (after >= self.top or self.first <= after + 1)


# Called for every publication that reaches this process, in offset order per channel
# (apart from gaps after a lost message, which the hub detects and fills).
LiveCallback = Callable[[str, str, Publication], None]
# Called when live delivery for a channel may have missed publications (reconnect).
ResyncCallback = Callable[[str], None]


class Backplane(abc.ABC):
    """Shared state of all replicas: channel streams, live fan-out, presence."""

    def __init__(self) -> None:
        self._on_live: LiveCallback | None = None
        self._on_resync: ResyncCallback | None = None

    def set_callbacks(self, on_live: LiveCallback, on_resync: ResyncCallback) -> None:
        self._on_live = on_live
        self._on_resync = on_resync

    # -- channel streams ------------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes) -> tuple[str, int]:
        """Append to the stream; return ``(epoch, offset)`` of the new publication."""

    @abc.abstractmethod
    async def read(self, channel: str, after: int, limit: int) -> ReadResult:
        """Publications with offset > ``after``, oldest first, at most ``limit``."""

    @abc.abstractmethod
    async def read_latest(self, channel: str, limit: int) -> ReadResult:
        """The newest ``limit`` publications, oldest first."""

    @abc.abstractmethod
    async def read_before(self, channel: str, before: int, limit: int) -> ReadResult:
        """Up to ``limit`` publications with offset < ``before``, oldest first (paging back)."""

    # -- live delivery --------------------------------------------------------------
    @abc.abstractmethod
    async def listen(self, channel: str) -> None:
        """Start live delivery for ``channel``; returns once nothing published later can be
        missed (so a read made after it overlaps the live feed instead of leaving a gap)."""

    @abc.abstractmethod
    async def unlisten(self, channel: str) -> None: ...

    # -- presence -------------------------------------------------------------------
    # A group (a room, or "everyone online") holds users; a user is present while at
    # least one of their connections has an unexpired entry. Replicas refresh their own
    # connections; a dead replica's entries expire after ``ttl``.
    @abc.abstractmethod
    async def presence_join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        """Add or refresh ``conn`` of ``user``; True when ``user`` was not present before."""

    @abc.abstractmethod
    async def presence_leave(self, group: str, user: str, conn: str) -> bool:
        """Remove ``conn``; True when it was ``user``'s last connection in ``group``."""

    @abc.abstractmethod
    async def presence_refresh(self, entries: Iterable[tuple[str, str, str]], ttl: float) -> None:
        """Extend the entries ``(group, user, conn)`` that still exist."""

    @abc.abstractmethod
    async def presence_members(self, group: str) -> set[str]:
        """The users present in ``group``."""

    @abc.abstractmethod
    async def presence_contains(self, group: str, users: Iterable[str]) -> dict[str, bool]:
        """Whether each of ``users`` is present in ``group``."""

    # -- shared state (telephony's calls) ---------------------------------------------
    # A small record (string fields) with a TTL, changed only by compare-and-set on its
    # ``state`` field, plus "guard" keys that make a record exclusive (one call per user).
    @abc.abstractmethod
    async def record_create(
        self, key: str, fields: dict[str, str], ttl: float, guards: list[str]
    ) -> bool:
        """Create ``key`` unless it or any guard exists; the guards then point to it."""

    @abc.abstractmethod
    async def record_transition(
        self,
        key: str,
        expect: set[str],
        updates: dict[str, str],
        ttl: float,
        guards: list[str],
        release: bool,
    ) -> dict[str, str] | None:
        """If the record's ``state`` is in ``expect``: apply ``updates``, set its TTL, and
        release (delete) or extend the guards that point to it; return the new record."""

    @abc.abstractmethod
    async def record_get(self, key: str) -> dict[str, str] | None: ...

    # -- lifecycle ------------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`BackplaneUnavailable` when the backplane cannot serve."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def _deliver(self, channel: str, epoch: str, publication: Publication) -> None:
        if self._on_live is not None:
            self._on_live(channel, epoch, publication)

    def _resync(self, channel: str) -> None:
        if self._on_resync is not None:
            self._on_resync(channel)
