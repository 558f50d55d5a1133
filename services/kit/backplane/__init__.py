"""Backplanes, chosen by URL: ``memory://`` (one process) or ``redis://host:port/db``."""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Backplane, BackplaneUnavailable, Publication, ReadResult
from .memory import MemoryBackplane, MemoryBroker
from .redis import RedisBackplane

__all__ = [
    "Backplane",
    "BackplaneUnavailable",
    "MemoryBackplane",
    "MemoryBroker",
    "Publication",
    "ReadResult",
    "RedisBackplane",
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
    if scheme in ("redis", "rediss", "unix"):
        return RedisBackplane(url, history_size, history_ttl, history_max_age)
    raise ValueError(f"unsupported backplane URL {url!r}: use memory:// or redis://host:port/db")
