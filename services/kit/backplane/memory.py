"""In-memory backplane for one process: unit tests and single-process runs.

Same semantics as the Redis backplane (epochs, gapless offsets, a bounded window),
so the contract tests run unchanged against both.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .base import Backplane, Publication, ReadResult

__all__ = ["MemoryBackplane", "MemoryBroker"]


@dataclass
class _Stream:
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    top: int = 0
    entries: deque[Publication] = field(default_factory=deque)
    published_at: deque[float] = field(default_factory=deque)  # parallel to entries


class MemoryBroker:
    """The shared state; one per process by default. Several :class:`MemoryBackplane`
    views of one broker behave like replicas sharing one Redis."""

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.listeners: dict[str, set[MemoryBackplane]] = {}
        self.records: dict[str, tuple[dict[str, str], float]] = {}  # key -> (fields, expiry)
        self.guards: dict[str, tuple[str, float]] = {}  # guard -> (record key, expiry)
        # group -> user -> connection -> expiry (monotonic seconds)
        self.presence: dict[str, dict[str, dict[str, float]]] = {}


_PROCESS_BROKER = MemoryBroker()


class MemoryBackplane(Backplane):
    def __init__(
        self,
        broker: MemoryBroker | None = None,
        history_size: int = 1000,
        history_max_age: float = 0.0,
    ) -> None:
        super().__init__()
        self._history_max_age = history_max_age
        self._broker = _PROCESS_BROKER if broker is None else broker
        self._history_size = history_size
        self._streams = self._broker.streams
        self._presence = self._broker.presence

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream()
        if self._history_max_age > 0:
            cutoff = time.time() - self._history_max_age
            while stream.published_at and stream.published_at[0] < cutoff:
                stream.entries.popleft()
                stream.published_at.popleft()
        return stream

    def _result(self, stream: _Stream, publications: list[Publication]) -> ReadResult:
        first = stream.entries[0].offset if stream.entries else stream.top + 1
        return ReadResult(stream.epoch, stream.top, first, publications)

    async def publish(self, channel: str, data: bytes) -> tuple[str, int]:
        stream = self._stream(channel)
        stream.top += 1
        publication = Publication(stream.top, data)
        stream.entries.append(publication)
        stream.published_at.append(time.time())
        while len(stream.entries) > self._history_size:
            stream.entries.popleft()
            stream.published_at.popleft()
        for listener in list(self._broker.listeners.get(channel, ())):
            listener._deliver(channel, stream.epoch, publication)
        return stream.epoch, stream.top

    async def read(self, channel: str, after: int, limit: int) -> ReadResult:
        stream = self._stream(channel)
        picked = [p for p in stream.entries if p.offset > after][:limit]
        return self._result(stream, picked)

    async def read_latest(self, channel: str, limit: int) -> ReadResult:
        stream = self._stream(channel)
        picked = list(stream.entries)[-limit:] if limit > 0 else []
        return self._result(stream, picked)

    async def read_before(self, channel: str, before: int, limit: int) -> ReadResult:
        stream = self._stream(channel)
        older = [p for p in stream.entries if p.offset < before]
        return self._result(stream, older[-limit:] if limit > 0 else [])

    async def listen(self, channel: str) -> None:
        self._broker.listeners.setdefault(channel, set()).add(self)

    async def unlisten(self, channel: str) -> None:
        listeners = self._broker.listeners.get(channel)
        if listeners is not None:
            listeners.discard(self)
            if not listeners:
                del self._broker.listeners[channel]

    def drop_stream(self, channel: str) -> None:
        """Forget a channel's stream, as Redis does when it loses its data (tests)."""
        self._streams.pop(channel, None)

    def _conns(self, group: str, user: str) -> dict[str, float]:
        now = time.monotonic()
        users = self._presence.setdefault(group, {})
        conns = users.setdefault(user, {})
        for conn in [c for c, expiry in conns.items() if expiry <= now]:
            del conns[conn]
        if not conns:
            del users[user]
            if not users:
                del self._presence[group]
        return conns

    async def presence_join(self, group: str, user: str, conn: str, ttl: float) -> bool:
        conns = self._conns(group, user)
        was_absent = not conns
        conns[conn] = time.monotonic() + ttl
        self._presence.setdefault(group, {})[user] = conns
        return was_absent

    async def presence_leave(self, group: str, user: str, conn: str) -> bool:
        conns = self._conns(group, user)
        if conns.pop(conn, None) is None:
            return False
        if not conns:
            self._conns(group, user)  # drops the empty entry
            return True
        return False

    async def presence_refresh(self, entries: Iterable[tuple[str, str, str]], ttl: float) -> None:
        expiry = time.monotonic() + ttl
        for group, user, conn in entries:
            conns = self._conns(group, user)
            if conn in conns:
                conns[conn] = expiry

    async def presence_members(self, group: str) -> set[str]:
        return {user for user in list(self._presence.get(group, {})) if self._conns(group, user)}

    async def presence_contains(self, group: str, users: Iterable[str]) -> dict[str, bool]:
        return {user: bool(self._conns(group, user)) for user in users}

    def _record(self, key: str) -> dict[str, str] | None:
        found = self._broker.records.get(key)
        if found is None or found[1] <= time.monotonic():
            self._broker.records.pop(key, None)
            return None
        return found[0]

    def _guard(self, guard: str) -> str | None:
        found = self._broker.guards.get(guard)
        if found is None or found[1] <= time.monotonic():
            self._broker.guards.pop(guard, None)
            return None
        return found[0]

    async def record_create(
        self, key: str, fields: dict[str, str], ttl: float, guards: list[str]
    ) -> bool:
        if self._record(key) is not None or any(self._guard(g) for g in guards):
            return False
        expiry = time.monotonic() + ttl
        self._broker.records[key] = (dict(fields), expiry)
        for guard in guards:
            self._broker.guards[guard] = (key, expiry)
        return True

    async def record_transition(
        self,
        key: str,
        expect: set[str],
        updates: dict[str, str],
        ttl: float,
        guards: list[str],
        release: bool,
    ) -> dict[str, str] | None:
        record = self._record(key)
        if record is None or record.get("state") not in expect:
            return None
        record.update(updates)
        expiry = time.monotonic() + ttl
        self._broker.records[key] = (record, expiry)
        for guard in guards:
            if self._guard(guard) == key:
                if release:
                    del self._broker.guards[guard]
                else:
                    self._broker.guards[guard] = (key, expiry)
        return dict(record)

    async def record_get(self, key: str) -> dict[str, str] | None:
        record = self._record(key)
        return None if record is None else dict(record)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for channel in [c for c, ls in self._broker.listeners.items() if self in ls]:
            await self.unlisten(channel)
