"""The broker interface: channel streams with offsets, one history read, live delivery.

A channel either keeps a stream (offsets 1, 2, 3, … under an epoch, a bounded history,
read back with :meth:`Broker.history`) or is used only for **ephemeral** publications
(``history=False``): delivered live to every replica listening, never stored, with no
offset. Internal events (membership, presence, call signalling) are ephemeral; what
clients must be able to resume (chat rooms, notifications, prices) keeps its stream.

One process listens to a channel once, however many local clients want it; the hub fans
publications out. Implementations: memory (one process) and Redis, side by side.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "EPHEMERAL_OFFSET",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_OFFSET",
    "NO_EPOCH",
    "BackplaneUnavailable",
    "Broker",
    "LiveCallback",
    "Publication",
    "ReadResult",
    "ResyncCallback",
    "check_offset",
]

# Offsets are exact in Lua (doubles) and JavaScript up to 2^53 - 1; a client offset above
# it is bad input, not something to send to Redis.
MAX_OFFSET = 2**53 - 1
# The offset of an ephemeral publication: it has no place in any stream.
EPHEMERAL_OFFSET = 0
# The epoch of a channel that has no stream yet (never published, or expired): reading
# it creates nothing. The first publication creates the stream and its real epoch.
NO_EPOCH = ""
MAX_IDEMPOTENCY_KEY = 200  # the broker's limit; clients get a smaller one (see ops)


class BackplaneUnavailable(Exception):
    """The backplane cannot be reached; clients get ``unavailable`` and may retry."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication. ``data`` is the JSON of the payload object; ``offset`` is its
    place in the channel stream, or :data:`EPHEMERAL_OFFSET` for an ephemeral one."""

    offset: int
    data: bytes

    @property
    def ephemeral(self) -> bool:
        return self.offset == EPHEMERAL_OFFSET


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A window of a channel stream read in one atomic step, oldest first.

    ``top`` is the offset of the newest publication (0 for an empty stream) and
    ``first`` the oldest still in history (``top + 1`` when the history is empty).
    ``epoch`` is :data:`NO_EPOCH` when the channel has no stream.
    """

    epoch: str
    top: int
    first: int
    publications: list[Publication]

    def covers(self, after: int) -> bool:
        """True when every publication after ``after`` up to ``top`` is in this history."""
        return after <= self.top and (after >= self.top or self.first <= after + 1)


# Called for every publication that reaches this process (``epoch`` is NO_EPOCH for an
# ephemeral one), in offset order per channel apart from gaps after a lost message,
# which the hub detects and fills.
LiveCallback = Callable[[str, str, Publication], None]
# Called when live delivery for a channel may have missed publications (reconnect).
ResyncCallback = Callable[[str], None]


class Broker(abc.ABC):
    """Publish with offsets, read history, deliver live to every listening replica."""

    def __init__(self) -> None:
        self._on_live: LiveCallback | None = None
        self._on_resync: ResyncCallback | None = None

    def set_callbacks(self, on_live: LiveCallback, on_resync: ResyncCallback) -> None:
        self._on_live = on_live
        self._on_resync = on_resync

    @abc.abstractmethod
    async def publish(
        self, channel: str, data: bytes, *, history: bool = True, idempotency_key: str = ""
    ) -> tuple[str, int]:
        """Append to the stream and deliver live; return ``(epoch, offset)``.

        ``history=False``: deliver live only, store nothing; returns
        ``(NO_EPOCH, EPHEMERAL_OFFSET)``. ``idempotency_key`` (at most
        :data:`MAX_IDEMPOTENCY_KEY` characters): a publication with a key already used on
        this channel within the history window publishes nothing and returns the first
        one's ``(epoch, offset)``.
        """

    @abc.abstractmethod
    async def history(
        self, channel: str, *, since: int | None = None, limit: int, reverse: bool = False
    ) -> ReadResult:
        """Up to ``limit`` publications, oldest first. Forward: those with offset >
        ``since`` (None: from the start). ``reverse``: the newest ones with offset <
        ``since`` (None: the newest of all). Side-effect free: creates nothing."""

    @abc.abstractmethod
    async def listen(self, channel: str) -> None:
        """Start live delivery for ``channel``; returns once nothing published later can be
        missed (so a read made after it overlaps the live feed instead of leaving a gap)."""

    @abc.abstractmethod
    async def unlisten(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def _deliver(self, channel: str, epoch: str, publication: Publication) -> None:
        if self._on_live is not None:
            self._on_live(channel, epoch, publication)

    def _resync(self, channel: str) -> None:
        if self._on_resync is not None:
            self._on_resync(channel)


def check_offset(offset: int | None) -> None:
    """Guard the broker against out-of-range offsets (callers validate client input)."""
    if offset is not None and not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset {offset} is outside 0..{MAX_OFFSET}")
