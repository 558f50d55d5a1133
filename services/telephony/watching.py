"""How many users each connection watches: the total is capped, not only each frame."""

from __future__ import annotations

from services.kit.connection import Connection
from services.kit.protocol import ErrorCode, ProtocolError

__all__ = ["WatchBudget"]


class WatchBudget:
    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self._watched: dict[Connection, set[str]] = {}

    def admit(self, conn: Connection, users: list[str], frame_id: str | int | None) -> None:
        """Count ``users`` as watched by ``conn``, or refuse the whole frame when the
        total would pass the cap (users already watched do not count twice)."""
        watched = self._watched.setdefault(conn, set())
        total = len(watched | set(users))
        if total > self.max_users:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"a connection watches at most {self.max_users} users"
                f" ({len(watched)} now): unwatch some first",
                frame_id,
            )
        watched.update(users)

    def release(self, conn: Connection, users: list[str]) -> None:
        self._watched.get(conn, set()).difference_update(users)

    def drop(self, conn: Connection) -> None:
        self._watched.pop(conn, None)
