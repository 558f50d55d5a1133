"""The heartbeat policy: load in, ping interval out; bounds, smoothing, hysteresis."""

from __future__ import annotations

from services.kit.heartbeat_policy import (
    HeartbeatPolicy,
    IntervalState,
    next_interval,
    target_interval,
)

POLICY = HeartbeatPolicy(floor=10, ceiling=120, connections_at_ceiling=10_000, lag_at_ceiling=0.5)


def settle(policy: HeartbeatPolicy, connections: int, lag: float, rounds: int = 40) -> float:
    state = IntervalState(policy.floor, policy.floor)
    for _ in range(rounds):
        state = next_interval(policy, state, connections, lag)
    return state.announced


def test_idle_replica_pings_at_the_floor():
    assert target_interval(POLICY, 0, 0.0) == 10
    assert settle(POLICY, 0, 0.0) == 10


def test_more_connections_mean_a_longer_interval():
    intervals = [settle(POLICY, n, 0.0) for n in (0, 1_000, 3_000, 5_000, 10_000)]
    assert intervals == sorted(intervals) and intervals[0] < intervals[-1]
    assert abs(settle(POLICY, 5_000, 0.0) - 65) <= 65 * POLICY.hysteresis + 1


def test_a_lagging_loop_also_lengthens_it():
    assert settle(POLICY, 100, 0.25) > settle(POLICY, 100, 0.0) + 30


def test_never_past_the_ceiling_or_under_the_floor():
    assert settle(POLICY, 10**6, 10.0) == 120
    assert target_interval(POLICY, -5, -1.0) == 10


def test_one_lag_spike_does_not_move_the_announced_interval():
    state = IntervalState(10, 10)
    state = next_interval(POLICY, state, 0, 0.1)  # target 32, smoothed 16.6: 66 % away
    spike = next_interval(POLICY, IntervalState(10, 10), 0, 0.02)  # target 14.4 -> 11.3
    assert spike.announced == 10
    assert state.announced != 10  # a real change moves it


def test_hysteresis_small_wobbles_around_a_level_are_not_announced():
    policy = HeartbeatPolicy(floor=10, ceiling=120, connections_at_ceiling=10_000)
    state = IntervalState(65, 65)
    changes = 0
    for i in range(100):
        connections = 5_000 + (600 if i % 2 else -600)  # +-12 % of the load
        new = next_interval(policy, state, connections, 0.0)
        changes += new.announced != state.announced
        state = new
    assert changes == 0


def test_whole_seconds_and_back_toward_the_floor_when_the_load_leaves():
    state = IntervalState(10, 10)
    for _ in range(30):
        state = next_interval(POLICY, state, 8_000, 0.0)
    high = state.announced
    assert high == int(high) and high > 80
    for _ in range(30):
        state = next_interval(POLICY, state, 0, 0.0)
    assert state.announced == 10


def test_a_fixed_interval_never_moves():
    fixed = HeartbeatPolicy(floor=25, ceiling=25)
    assert settle(fixed, 50_000, 2.0) == 25
