"""State of this replica that the health endpoints and the drain read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["ReplicaState"]


@dataclass(eq=False)
class ReplicaState:
    node_id: str
    draining: bool = False
    connections: set[Connection] = field(default_factory=set)
