"""State of this replica that the health endpoints, the drain and the handshake read."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .known_revocations import KnownRevocations

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["ReplicaState"]


@dataclass(eq=False)
class ReplicaState:
    node_id: str
    draining: bool = False
    #: the backplane has been unreachable for longer than the grace period: clients were
    #: closed with 1013 and new handshakes are refused (503) until it answers again
    backplane_lost: bool = False
    connections: set[Connection] = field(default_factory=set)
    #: open connections per user (the per-user cap)
    per_user: collections.Counter[str] = field(default_factory=collections.Counter)
    outbound_peak: int = 0  # the largest of closed connections
    #: the latest event-loop lag sample, seconds (loop_lag.py)
    loop_lag: float = 0.0
    #: when the backplane watch last heard the backplane answer (time.monotonic)
    backplane_answered_at: float = float("-inf")
    #: users' revocations as last read (known_revocations.py)
    known_revocations: KnownRevocations = field(default_factory=KnownRevocations)

    def peak_outbound_bytes(self) -> float:
        live = max((c.outbound_peak_bytes for c in self.connections), default=0)
        return float(max(self.outbound_peak, live))
