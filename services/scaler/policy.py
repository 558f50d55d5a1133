"""What the scaler decides: a pure function of one service's load, its bounds and the time
of its last change. No I/O, so every rule is unit-tested (tests/unit/test_scaler_policy.py).

- **Up** by one when any signal is over its limit: connections per replica over the target,
  the worst replica's event-loop lag over its limit, or the busiest replica's CPU over its
  limit (a fraction of one core: a replica is one event loop).
- **Down** by one only when every signal would stay well under its limit with one replica
  fewer (connections spread over n-1 under ``down_fraction`` of the target; lag and CPU
  under ``down_fraction`` of theirs). The gap between the two thresholds is the hysteresis:
  a load that just triggered a scale-up never triggers the scale-down that undoes it.
- Never outside [min, max]; a count outside them is brought back first.
- **Cool-down**: after a change, no other change for ``cooldown`` seconds, so the new
  replica's connections (clients move only when they reconnect) are seen before the next
  decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Bounds", "Decision", "Limits", "Load", "decide"]


@dataclass(frozen=True, slots=True)
class Load:
    replicas: int
    connections: float
    #: the worst replica's latest event-loop lag, seconds
    lag: float
    #: the busiest replica's CPU, in cores
    cpu: float


@dataclass(frozen=True, slots=True)
class Bounds:
    minimum: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Limits:
    connections_per_replica: float = 5000
    lag: float = 0.1
    cpu: float = 0.8
    down_fraction: float = 0.5
    cooldown: float = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: str

    def changes(self, current: int) -> bool:
        return self.replicas != current


def decide(load: Load, bounds: Bounds, limits: Limits, now: float, last_change: float) -> Decision:
    current = load.replicas
    if current < bounds.minimum:
        return Decision(bounds.minimum, f"below the minimum {bounds.minimum}")
    if current > bounds.maximum:
        return Decision(bounds.maximum, f"above the maximum {bounds.maximum}")
    if now - last_change < limits.cooldown:
        return Decision(current, "cooling down")
    per_replica = load.connections / max(current, 1)
    over = []
    if per_replica > limits.connections_per_replica:
        over.append(
            f"{per_replica:.0f} connections per replica > {limits.connections_per_replica:.0f}"
        )
    if load.lag > limits.lag:
        over.append(f"loop lag {load.lag * 1000:.0f} ms > {limits.lag * 1000:.0f} ms")
    if load.cpu > limits.cpu:
        over.append(f"CPU {load.cpu:.2f} > {limits.cpu:.2f} cores")
    if over:
        if current >= bounds.maximum:
            return Decision(current, f"at the maximum {bounds.maximum}: " + "; ".join(over))
        return Decision(current + 1, "; ".join(over))
    if current > bounds.minimum:
        fewer = load.connections / (current - 1)
        quiet = (
            fewer < limits.connections_per_replica * limits.down_fraction
            and load.lag < limits.lag * limits.down_fraction
            and load.cpu < limits.cpu * limits.down_fraction
        )
        if quiet:
            return Decision(
                current - 1,
                f"{math.ceil(fewer)} connections per replica with one fewer; lag and CPU low",
            )
    return Decision(current, "steady")
