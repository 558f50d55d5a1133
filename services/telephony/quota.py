"""Call rate limits shared by every replica: a fixed-window counter per key.

The counter is a backplane record whose ``state`` is the count, so an increment is a
compare-and-set on it (two replicas counting the same caller at once cannot both win with
the same count). The window's end is stored with it, so the record's TTL is not extended
by later increments.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.kit.protocol import ErrorCode, ProtocolError

from .call_records import CallRecords, Transition

__all__ = ["CallQuota"]

ATTEMPTS = 5  # compare-and-set retries before a contended counter refuses
MIN_TTL = 0.01  # a record TTL of 0 would delete it at once (PEXPIRE 0)


class CallQuota:
    def __init__(self, records: CallRecords, clock: Callable[[], float] = time.time) -> None:
        self._records = records
        self._clock = clock

    async def require(
        self, key: str, limit: int, window: float, what: str, frame_id: str | int | None
    ) -> None:
        """:meth:`take`, or refuse the frame with ``rate_limited``, naming the limit."""
        if not await self.take(key, limit, window):
            message = f"at most {limit} {what} per {window:g} s"
            raise ProtocolError(ErrorCode.RATE_LIMITED, message, frame_id)

    async def take(self, key: str, limit: int, window: float) -> bool:
        """Count one event under ``key``; False when ``limit`` events already happened in
        the current ``window`` (seconds). A limit of 0 means no limit."""
        if limit <= 0:
            return True
        record_key = f"quota:{key}"
        for _ in range(ATTEMPTS):
            record = await self._records.get(record_key)
            now = self._clock()
            if record is None:
                fields = {"state": "1", "until": repr(now + window)}
                if await self._records.create(record_key, fields, window, []):
                    return True
                continue  # another replica created it first: count again
            count = int(record["state"])
            if count >= limit:
                return False
            remaining = max(MIN_TTL, float(record["until"]) - now)
            change = Transition(
                frozenset({record["state"]}), {"state": str(count + 1)}, remaining, [], False
            )
            counted = await self._records.transition(record_key, change)
            if counted is not None:
                return True
        return False
