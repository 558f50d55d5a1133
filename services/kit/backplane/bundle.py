"""What one replica holds of the backplane: a broker, a presence store and the
revocation store, opened, pinged and closed together."""

from __future__ import annotations

from .broker import Broker
from .broker_memory import MemoryBroker
from .broker_redis import RedisBroker
from .memory_state import PROCESS_STATE, MemoryState
from .presence import Presence
from .presence_memory import MemoryPresence
from .presence_redis import RedisPresence
from .redis_connection import RedisConnection
from .revocations import MemoryRevocations, Revocations
from .revocations_redis import RedisRevocations

__all__ = ["Backplane", "MemoryBackplane", "RedisBackplane"]


class Backplane:
    def __init__(self, broker: Broker, presence: Presence, revocations: Revocations) -> None:
        self.broker = broker
        self.presence = presence
        self.revocations = revocations

    async def ping(self) -> None:
        """Raise :class:`BackplaneUnavailable` when the backplane cannot serve."""

    async def close(self) -> None:
        await self.broker.close()


class MemoryBackplane(Backplane):
    """A replica's view of in-process state (one state per process by default; views of
    one :class:`MemoryState` behave like replicas sharing one Redis)."""

    def __init__(
        self,
        state: MemoryState | None = None,
        history_size: int = 1000,
        history_max_age: float = 0.0,
    ) -> None:
        self.state = PROCESS_STATE if state is None else state
        super().__init__(
            MemoryBroker(self.state, history_size, history_max_age),
            MemoryPresence(self.state),
            MemoryRevocations(self.state),
        )

    def drop_stream(self, channel: str) -> None:
        """Fault injection: lose a channel's stream, as a Redis losing its data would."""
        self.state.drop_stream(channel)


class RedisBackplane(Backplane):
    def __init__(
        self,
        url: str,
        history_size: int = 1000,
        history_ttl: float = 86400.0,
        history_max_age: float = 0.0,
    ) -> None:
        # Public: service-specific stores (telephony's call records) share the pool, and
        # tests inject faults (FLUSHALL, killed connections) through it.
        self.connection = RedisConnection(url)
        broker = RedisBroker(self.connection, history_size, history_ttl, history_max_age)
        connection = self.connection
        super().__init__(broker, RedisPresence(connection), RedisRevocations(connection))

    async def ping(self) -> None:
        await self.connection.ping()

    async def close(self) -> None:
        await self.broker.close()
        await self.connection.close()
