"""What this replica last read of users' revocations, so a user who connects again soon
(a reload, a second tab, a flaky network) is not asked about in Redis every time.

An answer is kept for ``KEEP_SECONDS`` at most and only while it cannot have changed
unheard: a revocation is recorded in Redis first and then announced to every replica
(revocation.py), and the announcement drops the user's entry here. Answers whose read
was in flight when an announcement or a reconnect of the live feed came in are not kept
(the ``generation`` check), and a reconnect of the live feed, which may have lost
announcements, drops every entry. Nothing is kept before the replica hears the
announcements at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

__all__ = ["KEEP_SECONDS", "LIMIT", "KnownRevocations"]

KEEP_SECONDS = 10.0  # also the longest an answer can outlive an announcement lost unseen
LIMIT = 100_000  # users remembered; the oldest entry goes first


class KnownRevocations:
    def __init__(
        self,
        keep_seconds: float = KEEP_SECONDS,
        limit: int = LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep = keep_seconds
        self._limit = limit
        self._clock = clock
        # user -> (revoked at, or None; kept until)
        self._entries: dict[str, tuple[float | None, float]] = {}
        #: raised by every announcement and reconnect: a read started before one is stale
        self.generation = 0
        self._hearing = asyncio.Event()

    @property
    def hearing(self) -> bool:
        """True once the replica hears the announcements (set by revocation.py)."""
        return self._hearing.is_set()

    @hearing.setter
    def hearing(self, value: bool) -> None:
        if value:
            self._hearing.set()
        else:
            self._hearing.clear()

    async def until_hearing(self, seconds: float) -> bool:
        """Whether the replica hears the announcements, waiting ``seconds`` at most."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hearing.wait(), seconds)
        return self.hearing

    def lookup(self, user: str) -> tuple[bool, float | None]:
        """``(True, revoked_at)`` when a kept answer is current, else ``(False, None)``."""
        entry = self._entries.get(user)
        if entry is None:
            return False, None
        if entry[1] <= self._clock():
            del self._entries[user]
            return False, None
        return True, entry[0]

    def remember(self, user: str, revoked_at: float | None, generation: int) -> None:
        """Keep the answer of a read started at ``generation`` (dropped if stale)."""
        if not self.hearing or generation != self.generation or self._keep <= 0:
            return
        if len(self._entries) >= self._limit and user not in self._entries:
            del self._entries[next(iter(self._entries))]
        self._entries[user] = (revoked_at, self._clock() + self._keep)

    def heard(self, user: str) -> None:
        """A revocation of ``user`` was announced: their next handshake reads Redis."""
        self.generation += 1
        self._entries.pop(user, None)

    def forget_all(self) -> None:
        """The live feed reconnected: announcements may have been missed."""
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
