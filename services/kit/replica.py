"""State of this replica that the health endpoints and the drain read."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

    def peak_outbound_bytes(self) -> float:
        live = max((c.outbound_peak_bytes for c in self.connections), default=0)
        return float(max(self.outbound_peak, live))
