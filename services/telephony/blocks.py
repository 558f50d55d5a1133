"""Per-user block lists: callers a user does not want to hear from, kept in the backplane.

A list is one record (``blocks:<user>``) whose ``state`` is a version number, so a change
is a compare-and-set on the version: two devices of the same user changing the list at
once do not lose one another's change.
"""

from __future__ import annotations

import orjson

from .call_records import CallRecords, Transition

__all__ = ["BlockList", "TooManyBlocked"]

ATTEMPTS = 5
#: a list is kept this long after its last change (a record always has a TTL)
BLOCKS_TTL = 365 * 86400.0


class TooManyBlocked(Exception):
    """The change would make the list longer than allowed."""


class BlockList:
    def __init__(self, records: CallRecords, max_blocked: int) -> None:
        self._records = records
        self._max_blocked = max_blocked

    async def blocked_by(self, user: str) -> list[str]:
        record = await self._records.get(_key(user))
        return [] if record is None else _users(record)

    async def change(self, user: str, block: str | None, unblock: str | None) -> list[str]:
        """Add ``block`` and/or remove ``unblock``; return the new list."""
        key = _key(user)
        for _ in range(ATTEMPTS):
            record = await self._records.get(key)
            users = [] if record is None else _users(record)
            if block is not None and block not in users:
                if len(users) >= self._max_blocked:
                    raise TooManyBlocked(f"at most {self._max_blocked} blocked users")
                users.append(block)
            if unblock is not None and unblock in users:
                users.remove(unblock)
            fields = {"users": orjson.dumps(users).decode()}
            if record is None:
                created = {"state": "1", **fields}
                if await self._records.create(key, created, BLOCKS_TTL, []):
                    return users
                continue
            version = record["state"]
            updates = {"state": str(int(version) + 1), **fields}
            change = Transition(frozenset({version}), updates, BLOCKS_TTL, [], False)
            if await self._records.transition(key, change):
                return users
        raise TimeoutError("the block list kept changing under us")


def _key(user: str) -> str:
    return f"blocks:{user}"


def _users(record: dict[str, str]) -> list[str]:
    found = orjson.loads(record.get("users", "[]"))
    return [u for u in found if isinstance(u, str)]
