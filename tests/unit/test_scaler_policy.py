"""The scaler's policy: load in, replica count out, with bounds, hysteresis and cool-down."""

from __future__ import annotations

import pytest

from services.scaler.policy import Bounds, Limits, Load, decide

LIMITS = Limits(connections_per_replica=100, lag=0.1, cpu=0.8, down_fraction=0.5, cooldown=60)
BOUNDS = Bounds(minimum=2, maximum=4)
LONG_AGO = -1e9


def replicas_for(
    load: Load, bounds: Bounds = BOUNDS, now: float = 0.0, last: float = LONG_AGO
) -> int:
    return decide(load, BOUNDS, LIMITS, now, last).replicas


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (Load(2, connections=201, lag=0.0, cpu=0.0), 3),  # 100.5 per replica
        (Load(2, connections=200, lag=0.0, cpu=0.0), 2),  # exactly at the target: stay
        (Load(2, connections=10, lag=0.25, cpu=0.0), 3),  # a lagging loop
        (Load(2, connections=10, lag=0.0, cpu=0.95), 3),  # a busy core
        (Load(3, connections=140, lag=0.0, cpu=0.1), 3),  # 70 per replica on 2: not quiet
        (Load(3, connections=90, lag=0.0, cpu=0.1), 2),  # 45 on 2: quiet
        (Load(3, connections=90, lag=0.06, cpu=0.1), 3),  # lag over half its limit: stay
        (Load(2, connections=0, lag=0.0, cpu=0.0), 2),  # never under the minimum
    ],
)
def test_one_step_at_a_time_towards_the_load(load, expected):
    assert replicas_for(load) == expected


def test_never_above_the_maximum():
    decision = decide(Load(4, 10_000, 1.0, 2.0), BOUNDS, LIMITS, 0.0, LONG_AGO)
    assert decision.replicas == 4
    assert "maximum" in decision.reason


def test_counts_outside_the_bounds_are_brought_back_even_while_cooling_down():
    assert replicas_for(Load(1, 0, 0, 0), now=10, last=5) == 2
    assert replicas_for(Load(7, 0, 0, 0), now=10, last=5) == 4


def test_cool_down_holds_any_change_after_one():
    busy = Load(2, 1_000, 0.0, 0.0)
    assert replicas_for(busy, now=100, last=50) == 2
    assert replicas_for(busy, now=111, last=50) == 3


def test_hysteresis_a_scale_up_is_not_undone_by_the_same_load():
    """Just over the target on 2 -> 3; the same load on 3 must not go back to 2."""
    load = Load(2, 210, 0.0, 0.0)
    up = replicas_for(load)
    assert up == 3
    assert replicas_for(Load(up, load.connections, 0.0, 0.0)) == 3


def test_every_decision_says_why():
    decision = decide(Load(2, 500, 0.2, 0.0), BOUNDS, LIMITS, 0.0, LONG_AGO)
    assert "connections per replica" in decision.reason and "lag" in decision.reason
