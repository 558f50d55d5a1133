"""Telephony's own limits: read from the environment next to the kit's settings.

They live here rather than in the kit's ``Settings`` because only telephony has calls;
every variable is documented in .env.example and docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.settings import EnvReader, SettingsError

__all__ = ["TelephonyLimits"]


@dataclass(frozen=True)
class TelephonyLimits:
    #: users one connection may watch in total (each ``watch`` frame: at most 200)
    max_watched_users: int = 1000
    #: calls one user may place per ``call_window_seconds``, across all their connections
    calls_per_caller: int = 10
    call_window_seconds: float = 60.0
    #: calls one user may place to the same callee per ``callee_window_seconds``: with the
    #: ring timeout this bounds how long one caller can keep a callee's line ringing (and
    #: everyone else hearing ``busy``): 3 x 30 s in 10 minutes
    calls_per_callee: int = 3
    callee_window_seconds: float = 600.0
    #: callers one user may block
    max_blocked_users: int = 200
    #: a party's replica renews its lease on the call this often; a party whose lease is
    #: older than ``lease_seconds * 4`` has lost its replica and the call ends
    lease_seconds: float = 2.0

    @property
    def stale_after(self) -> float:
        return self.lease_seconds * 4

    @property
    def adopt_after(self) -> float:
        """A party's new connection takes its active call over once the connection holding
        it has missed a renewal (its replica is gone), well before ``stale_after`` ends it."""
        return self.lease_seconds * 2

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TelephonyLimits:
        reader = EnvReader(environ)
        limits = cls(
            max_watched_users=reader.integer("WWWS_MAX_WATCHED_USERS", cls.max_watched_users),
            calls_per_caller=reader.integer("WWWS_CALLS_PER_CALLER", cls.calls_per_caller),
            calls_per_callee=reader.integer("WWWS_CALLS_PER_CALLEE", cls.calls_per_callee),
            call_window_seconds=reader.number("WWWS_CALL_WINDOW_SECONDS", cls.call_window_seconds),
            callee_window_seconds=reader.number(
                "WWWS_CALLEE_WINDOW_SECONDS", cls.callee_window_seconds
            ),
            max_blocked_users=reader.integer("WWWS_MAX_BLOCKED_USERS", cls.max_blocked_users),
            lease_seconds=reader.number("WWWS_CALL_LEASE_SECONDS", cls.lease_seconds),
        )
        if limits.lease_seconds < 0.05:
            reader.problems.append("WWWS_CALL_LEASE_SECONDS must be at least 0.05")
        if reader.problems:
            raise SettingsError("invalid settings: " + "; ".join(reader.problems))
        return limits
