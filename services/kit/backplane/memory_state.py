"""The shared state of in-memory backplanes: what one Redis holds for all replicas.

Several :class:`~services.kit.backplane.bundle.MemoryBackplane` views of one state behave
like replicas sharing one Redis (the contract tests run replicas in one process so).
``clock`` (monotonic seconds) is injectable so tests can move time instead of sleeping.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .broker import Publication

if TYPE_CHECKING:
    from .broker_memory import MemoryBroker

__all__ = ["MemoryState", "MemoryStream"]


@dataclass
class MemoryStream:
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    top: int = 0
    entries: deque[Publication] = field(default_factory=deque)
    published_at: deque[float] = field(default_factory=deque)  # parallel to entries
    idempotency: dict[str, int] = field(default_factory=dict)  # key -> offset it got


class MemoryState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.streams: dict[str, MemoryStream] = {}
        self.listeners: dict[str, set[MemoryBroker]] = {}
        # group -> user -> connection -> expiry (clock seconds)
        self.presence: dict[str, dict[str, dict[str, float]]] = {}
        # scope (a service) -> node -> liveness expiry (clock seconds)
        self.replicas: dict[str, dict[str, float]] = {}
        # user -> (revoked at, forgotten at), both wall-clock seconds: tokens' iat is one
        self.revocations: dict[str, tuple[float, float]] = {}
        #: the next this many history reads fail (a Redis still loading after a restart)
        self.failing_reads = 0

    # -- fault injection (tests): what a Redis losing data or a message would do ------
    def drop_stream(self, channel: str) -> None:
        """Forget a channel's stream, as Redis does when it loses its data."""
        self.streams.pop(channel, None)

    def flush(self) -> None:
        """Forget every stream and presence entry, as a Redis FLUSHALL would."""
        self.streams.clear()
        self.presence.clear()
        self.revocations.clear()

    def append_without_delivery(self, channel: str, data: bytes) -> int:
        """Store a publication whose live message is lost; return its offset."""
        stream = self.streams.setdefault(channel, MemoryStream())
        stream.top += 1
        stream.entries.append(Publication(stream.top, data))
        stream.published_at.append(self.clock())
        return stream.top


PROCESS_STATE = MemoryState()
