"""The call desk's records: small string records with a TTL, changed only by
compare-and-set on their ``state`` field, plus "guard" keys that make a record exclusive
(one call per user). Memory and Redis implementations side by side; they live in the
backplane's store (the memory state or the Redis pool) so every replica shares them.
"""

from __future__ import annotations

import abc
import weakref
from dataclasses import dataclass, field
from typing import Any

from services.kit.backplane import (
    Backplane,
    MemoryBackplane,
    MemoryState,
    RedisBackplane,
    RedisConnection,
)

__all__ = [
    "CallRecords",
    "MemoryCallRecords",
    "RedisCallRecords",
    "Transition",
    "call_records_for",
]


@dataclass(frozen=True, slots=True)
class Transition:
    """A compare-and-set: if the record's ``state`` is in ``expect``, apply ``updates``,
    set its TTL, and release (delete) or extend the ``guards`` that point to it."""

    expect: frozenset[str]
    updates: dict[str, str]
    ttl: float
    guards: list[str]
    release: bool


class CallRecords(abc.ABC):
    @abc.abstractmethod
    async def create(self, key: str, fields: dict[str, str], ttl: float, guards: list[str]) -> bool:
        """Create ``key`` unless it or any guard exists; the guards then point to it."""

    @abc.abstractmethod
    async def transition(self, key: str, change: Transition) -> dict[str, str] | None:
        """Apply ``change`` if the record's state allows it; return the new record."""

    @abc.abstractmethod
    async def get(self, key: str) -> dict[str, str] | None: ...

    @abc.abstractmethod
    async def guarded(self, guard: str) -> str | None:
        """The key of the record ``guard`` points to, while it holds."""


def call_records_for(backplane: Backplane) -> CallRecords:
    """The records stored where ``backplane`` keeps its state."""
    if isinstance(backplane, RedisBackplane):
        return RedisCallRecords(backplane.connection)
    if isinstance(backplane, MemoryBackplane):
        return MemoryCallRecords(backplane.state)
    raise TypeError(f"no call records for {type(backplane).__name__}")


# -- memory -------------------------------------------------------------------------
@dataclass
class _Tables:
    records: dict[str, tuple[dict[str, str], float]] = field(default_factory=dict)
    guards: dict[str, tuple[str, float]] = field(default_factory=dict)  # -> (record, expiry)


# One set of tables per memory state, so replicas sharing a state share the records.
_TABLES: weakref.WeakKeyDictionary[MemoryState, _Tables] = weakref.WeakKeyDictionary()


class MemoryCallRecords(CallRecords):
    def __init__(self, state: MemoryState) -> None:
        self._clock = state.clock
        self._tables = _TABLES.setdefault(state, _Tables())

    def _record(self, key: str) -> dict[str, str] | None:
        found = self._tables.records.get(key)
        if found is None or found[1] <= self._clock():
            self._tables.records.pop(key, None)
            return None
        return found[0]

    def _guard(self, guard: str) -> str | None:
        found = self._tables.guards.get(guard)
        if found is None or found[1] <= self._clock():
            self._tables.guards.pop(guard, None)
            return None
        return found[0]

    async def create(self, key: str, fields: dict[str, str], ttl: float, guards: list[str]) -> bool:
        if self._record(key) is not None or any(self._guard(g) for g in guards):
            return False
        expiry = self._clock() + ttl
        self._tables.records[key] = (dict(fields), expiry)
        for guard in guards:
            self._tables.guards[guard] = (key, expiry)
        return True

    async def transition(self, key: str, change: Transition) -> dict[str, str] | None:
        record = self._record(key)
        if record is None or record.get("state") not in change.expect:
            return None
        record.update(change.updates)
        expiry = self._clock() + change.ttl
        self._tables.records[key] = (record, expiry)
        for guard in change.guards:
            if self._guard(guard) == key:
                if change.release:
                    del self._tables.guards[guard]
                else:
                    self._tables.guards[guard] = (key, expiry)
        return dict(record)

    async def get(self, key: str) -> dict[str, str] | None:
        record = self._record(key)
        return None if record is None else dict(record)

    async def guarded(self, guard: str) -> str | None:
        return self._guard(guard)


# -- Redis --------------------------------------------------------------------------
def _key(key: str) -> str:
    return f"wwws:record:{key}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCallRecords(CallRecords):
    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection
        self._create = connection.script(__package__, "record_create.lua")
        self._transition = connection.script(__package__, "record_transition.lua")

    async def create(self, key: str, fields: dict[str, str], ttl: float, guards: list[str]) -> bool:
        keys = [_key(key), *(_key(g) for g in guards)]
        args: list[Any] = [int(ttl * 1000)]
        for name, value in fields.items():
            args.extend((name, value))
        return bool(await self._redis.run(self._create, keys, args))

    async def transition(self, key: str, change: Transition) -> dict[str, str] | None:
        keys = [_key(key), *(_key(g) for g in change.guards)]
        expect = ",".join(sorted(change.expect))
        args: list[Any] = [int(change.ttl * 1000), expect, "1" if change.release else "0"]
        for name, value in change.updates.items():
            args.extend((name, value))
        found = await self._redis.run(self._transition, keys, args)
        if found is None:
            return None
        return {_text(found[i]): _text(found[i + 1]) for i in range(0, len(found), 2)}

    async def get(self, key: str) -> dict[str, str] | None:
        found = await self._redis.call(self._redis.client.hgetall(_key(key)))
        return {_text(k): _text(v) for k, v in found.items()} or None

    async def guarded(self, guard: str) -> str | None:
        found = await self._redis.execute("GET", _key(guard))
        return None if found is None else _text(found).removeprefix(_key(""))
