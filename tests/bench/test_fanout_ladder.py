"""When the fan-out ladder stops: at the target's limit, not the load generator's."""

from __future__ import annotations

from bench.scenarios import ladder_saturated


def test_a_target_that_delivers_what_was_sent_is_not_saturated() -> None:
    # the step asked 480k frames/s, the load generator sent 421k, the target delivered 389k
    assert not ladder_saturated(389_000, 480_000, 421_000, 0.4, 10.0)


def test_a_target_that_falls_behind_what_was_sent_is_saturated() -> None:
    assert ladder_saturated(115_000, 160_000, 159_000, 0.4, 10.0)
    # sending short does not hide a target that delivers even less
    assert ladder_saturated(200_000, 480_000, 421_000, 0.4, 10.0)


def test_a_step_that_needs_the_whole_drain_limit_is_saturated() -> None:
    assert ladder_saturated(480_000, 480_000, 480_000, 10.0, 10.0)


def test_the_step_asked_for_is_the_bar_when_more_was_sent() -> None:
    # a catch-up burst can send a little over the step's rate: the bar stays the step's
    assert ladder_saturated(400_000, 480_000, 500_000, 0.4, 10.0)
    assert not ladder_saturated(410_000, 480_000, 500_000, 0.4, 10.0)
