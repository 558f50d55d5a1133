"""How often a replica pings its clients, from its own load: a pure function, so that every
rule is unit-tested (tests/unit/test_heartbeat_policy.py).

The server, not the client, decides how often it checks that a client is still there, and
**a loaded replica checks less often**: every ping is a frame written and a pong read per
connection, so at 10,000 connections a 10 s interval costs 2,000 frames a second that a
busy replica needs for its real work. The interval grows with the load's pressure (the
larger of connections held and event-loop lag, each against the level at which the
ceiling is reached) between a floor and a ceiling:

    target = floor + (ceiling - floor) * min(1, max(connections / at_ceiling, lag / lag_at_ceiling))

The announced interval follows the target smoothed (an exponential moving average, so a
single lag spike moves it little) and only when the smoothed value is more than
``hysteresis`` away from what was announced (so it does not flap, and clients are told
rarely). Whole seconds, never outside [floor, ceiling]. A fixed interval is
floor == ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HeartbeatPolicy", "IntervalState", "next_interval", "target_interval"]


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    floor: float = 10.0
    ceiling: float = 120.0
    #: connections held at which the interval reaches the ceiling
    connections_at_ceiling: float = 20_000.0
    #: event-loop lag (s) at which the interval reaches the ceiling
    lag_at_ceiling: float = 0.5
    #: weight of a new sample in the moving average
    smoothing: float = 0.3
    #: relative change of the smoothed value needed to announce a new interval
    hysteresis: float = 0.15

    @property
    def fixed(self) -> bool:
        return self.floor >= self.ceiling


@dataclass(frozen=True, slots=True)
class IntervalState:
    announced: float
    smoothed: float


def target_interval(policy: HeartbeatPolicy, connections: int, lag: float) -> float:
    pressure = max(
        connections / policy.connections_at_ceiling if policy.connections_at_ceiling else 0.0,
        lag / policy.lag_at_ceiling if policy.lag_at_ceiling else 0.0,
    )
    pressure = min(1.0, max(0.0, pressure))
    return policy.floor + (policy.ceiling - policy.floor) * pressure


def next_interval(
    policy: HeartbeatPolicy, state: IntervalState, connections: int, lag: float
) -> IntervalState:
    """One load sample in, the (maybe) new announced interval out."""
    if policy.fixed:
        return IntervalState(policy.floor, policy.floor)
    target = target_interval(policy, connections, lag)
    smoothed = state.smoothed + policy.smoothing * (target - state.smoothed)
    announced = state.announced
    rounded = float(min(policy.ceiling, max(policy.floor, round(smoothed))))
    # a bound reached is announced even within the hysteresis: an idle replica goes back
    # to the floor, a saturated one gets to the ceiling
    at_bound = rounded in (policy.floor, policy.ceiling)
    if abs(smoothed - announced) > policy.hysteresis * announced or at_bound:
        announced = rounded
    return IntervalState(announced, smoothed)
