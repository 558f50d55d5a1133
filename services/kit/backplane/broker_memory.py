"""In-memory broker for one process: same semantics as the Redis broker (epochs,
gapless offsets, a bounded window, idempotency keys, ephemeral publications)."""

from __future__ import annotations

from .broker import (
    EPHEMERAL_OFFSET,
    NO_EPOCH,
    BackplaneUnavailable,
    Broker,
    Publication,
    ReadResult,
    check_offset,
)
from .memory_state import MemoryState, MemoryStream

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    def __init__(
        self, state: MemoryState, history_size: int = 1000, history_max_age: float = 0.0
    ) -> None:
        super().__init__()
        self._state = state
        self._history_size = history_size
        self._history_max_age = history_max_age

    def _trimmed(self, channel: str) -> MemoryStream | None:
        stream = self._state.streams.get(channel)
        if stream is not None and self._history_max_age > 0:
            cutoff = self._state.clock() - self._history_max_age
            while stream.published_at and stream.published_at[0] < cutoff:
                stream.entries.popleft()
                stream.published_at.popleft()
            _forget_keys_outside_the_window(stream)
        return stream

    async def publish(
        self, channel: str, data: bytes, *, history: bool = True, idempotency_key: str = ""
    ) -> tuple[str, int]:
        if not history:
            self._fan_out(channel, NO_EPOCH, Publication(EPHEMERAL_OFFSET, data))
            return NO_EPOCH, EPHEMERAL_OFFSET
        stream = self._trimmed(channel)
        if stream is None:
            stream = self._state.streams[channel] = MemoryStream()
        if idempotency_key in stream.idempotency:
            return stream.epoch, stream.idempotency[idempotency_key]
        stream.top += 1
        publication = Publication(stream.top, data)
        stream.entries.append(publication)
        stream.published_at.append(self._state.clock())
        while len(stream.entries) > self._history_size:
            stream.entries.popleft()
            stream.published_at.popleft()
        if idempotency_key:
            stream.idempotency[idempotency_key] = stream.top
        _forget_keys_outside_the_window(stream)
        self._fan_out(channel, stream.epoch, publication)
        return stream.epoch, stream.top

    def _fan_out(self, channel: str, epoch: str, publication: Publication) -> None:
        for listener in list(self._state.listeners.get(channel, ())):
            listener._deliver(channel, epoch, publication)

    async def history(
        self, channel: str, *, since: int | None = None, limit: int, reverse: bool = False
    ) -> ReadResult:
        check_offset(since)
        if self._state.failing_reads > 0:
            self._state.failing_reads -= 1
            raise BackplaneUnavailable("LOADING Redis is loading the dataset in memory")
        stream = self._trimmed(channel)
        if stream is None:
            return ReadResult(NO_EPOCH, 0, 1, [])
        entries = list(stream.entries)
        if reverse:
            if since is not None:
                entries = [p for p in entries if p.offset < since]
            picked = entries[-limit:] if limit > 0 else []
        else:
            picked = [p for p in entries if p.offset > (since or 0)][: max(limit, 0)]
        first = stream.entries[0].offset if stream.entries else stream.top + 1
        return ReadResult(stream.epoch, stream.top, first, picked)

    async def listen(self, channel: str) -> None:
        self._state.listeners.setdefault(channel, set()).add(self)

    async def unlisten(self, channel: str) -> None:
        listeners = self._state.listeners.get(channel)
        if listeners is not None:
            listeners.discard(self)
            if not listeners:
                del self._state.listeners[channel]

    async def close(self) -> None:
        for channel in [c for c, ls in self._state.listeners.items() if self in ls]:
            await self.unlisten(channel)


def _forget_keys_outside_the_window(stream: MemoryStream) -> None:
    """Idempotency keys live as long as their entry is in the window, no longer."""
    first = stream.entries[0].offset if stream.entries else stream.top + 1
    if any(offset < first for offset in stream.idempotency.values()):
        stream.idempotency = {k: o for k, o in stream.idempotency.items() if o >= first}
