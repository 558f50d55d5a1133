"""The revocation store: since when a user's tokens are void.

Revoking a user records the moment (Redis's clock: every replica agrees); a token issued
at or before it is refused at the handshake and at a refresh, for ``keep_seconds`` (set
it to at least the longest token lifetime: after that, every such token has expired on
its own). The memory implementation serves unit tests and single-process runs.
"""

from __future__ import annotations

import abc
import time

from .memory_state import MemoryState

__all__ = ["MemoryRevocations", "Revocations"]


class Revocations(abc.ABC):
    @abc.abstractmethod
    async def revoke(self, user: str, keep_seconds: float) -> float:
        """Void the user's tokens issued until now; return now (seconds since the epoch)."""

    @abc.abstractmethod
    async def revoked_at(self, user: str) -> float | None:
        """When the user's tokens were last revoked (None: not within keep_seconds)."""


class MemoryRevocations(Revocations):
    def __init__(self, state: MemoryState) -> None:
        self._state = state

    async def revoke(self, user: str, keep_seconds: float) -> float:
        now = time.time()
        self._state.revocations[user] = (now, now + keep_seconds)
        return now

    async def revoked_at(self, user: str) -> float | None:
        entry = self._state.revocations.get(user)
        if entry is None:
            return None
        if entry[1] <= time.time():
            del self._state.revocations[user]
            return None
        return entry[0]
