"""Backplanes, chosen by URL: ``memory://`` (one process) or ``redis://host:port/db``.

A :class:`Backplane` bundles a :class:`Broker` (channel streams with offsets, history,
live and ephemeral delivery) and a :class:`Presence` store (TTL'd groups of users), each
with a memory and a Redis implementation side by side.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .broker import (
    EPHEMERAL_OFFSET,
    MAX_OFFSET,
    NO_EPOCH,
    BackplaneUnavailable,
    Broker,
    Publication,
    ReadResult,
)
from .broker_memory import MemoryBroker
from .broker_redis import RedisBroker
from .bundle import Backplane, MemoryBackplane, RedisBackplane
from .memory_state import MemoryState
from .presence import Presence, PresenceEntry
from .presence_memory import MemoryPresence
from .presence_redis import RedisPresence
from .redis_connection import RedisConnection
from .revocations import MemoryRevocations, Revocations
from .revocations_redis import RedisRevocations

__all__ = [
    "EPHEMERAL_OFFSET",
    "MAX_OFFSET",
    "NO_EPOCH",
    "Backplane",
    "BackplaneUnavailable",
    "Broker",
    "MemoryBackplane",
    "MemoryBroker",
    "MemoryPresence",
    "MemoryRevocations",
    "MemoryState",
    "Presence",
    "PresenceEntry",
    "Publication",
    "ReadResult",
    "RedisBackplane",
    "RedisBroker",
    "RedisConnection",
    "RedisPresence",
    "RedisRevocations",
    "Revocations",
    "open_backplane",
]


def open_backplane(
    url: str, history_size: int, history_ttl: float, history_max_age: float = 0.0
) -> Backplane:
    """``history_size``: publications kept per channel; ``history_max_age``: seconds a
    publication stays in history (0: no age limit); ``history_ttl``: an idle channel's
    stream expires this long after its last publication (its epoch then changes)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackplane(history_size=history_size, history_max_age=history_max_age)
    if scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        return RedisBackplane(url, history_size, history_ttl, history_max_age)
    raise ValueError(
        f"unsupported backplane URL {url!r}: use memory://, redis://host:port/db or "
        "redis+sentinel://sentinel1:26379,sentinel2:26379/<master>/db"
    )
