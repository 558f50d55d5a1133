from __future__ import annotations

from services.kit.outage import BackplaneOutage


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_reported_once_when_it_outlasts_the_grace():
    clock = FakeClock()
    outage = BackplaneOutage(grace=5.0, clock=clock)
    assert outage.observe(False) is False  # the first failed probe starts the clock
    clock.now += 4.9
    assert outage.observe(False) is False
    assert outage.lost is False
    clock.now += 0.1
    assert outage.observe(False) is True
    assert outage.lost is True
    clock.now += 10
    assert outage.observe(False) is False  # reported once per outage


def test_a_successful_probe_ends_the_outage_and_restarts_the_clock():
    clock = FakeClock()
    outage = BackplaneOutage(grace=5.0, clock=clock)
    outage.observe(False)
    clock.now += 6
    assert outage.observe(False) is True
    assert outage.observe(True) is False
    assert outage.lost is False
    outage.observe(False)
    clock.now += 4
    assert outage.observe(False) is False  # a new outage: a new grace period
    clock.now += 1
    assert outage.observe(False) is True


def test_a_blip_shorter_than_the_grace_is_not_an_outage():
    clock = FakeClock()
    outage = BackplaneOutage(grace=5.0, clock=clock)
    outage.observe(False)
    clock.now += 3
    outage.observe(True)
    clock.now += 3
    assert outage.observe(False) is False
