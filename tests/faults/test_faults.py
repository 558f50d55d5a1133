"""The fault suite (issue 12): each fault hits the real stack while users of every service
work, and the guarantees must hold through it.

One scenario runs once (a module fixture) and each test below checks one guarantee of
it, so a report says which guarantee broke under which fault. Per scenario the suite
prints how long after the fault every client was live again.
"""

from __future__ import annotations

import asyncio

import pytest
from faultrun import Outcome, run_scenario
from injections import SCENARIOS, Scenario
from stack import Stack


@pytest.fixture(scope="module", params=SCENARIOS, ids=str)
def outcome(request: pytest.FixtureRequest, stack: Stack) -> Outcome:
    scenario: Scenario = request.param
    return asyncio.run(run_scenario(stack, scenario))


def assert_none(outcome: Outcome, aspect: str) -> None:
    problems = outcome.problems[aspect]
    assert not problems, f"{outcome.scenario}, {aspect}:\n" + "\n".join(problems)


def test_chat_every_acknowledged_message_once_in_order(outcome: Outcome) -> None:
    assert_none(outcome, "chat")


def test_ticker_every_acknowledged_notification_once_in_order(outcome: Outcome) -> None:
    assert_none(outcome, "ticker")


def test_ticker_prices_flow_again(outcome: Outcome) -> None:
    assert_none(outcome, "ticker-prices")


def test_telephony_presence_is_right_again(outcome: Outcome) -> None:
    assert_none(outcome, "presence")


def test_telephony_call_survives_or_ends_visibly(outcome: Outcome) -> None:
    """Survives every fault but Redis losing its data; then the parties are told."""
    assert_none(outcome, "call")


def test_clients_keep_going_and_see_only_the_faults_close_codes(outcome: Outcome) -> None:
    assert_none(outcome, "clients")
    scenario = next(s for s in SCENARIOS if s.name == outcome.scenario)
    unexpected = {
        name: codes
        for name, codes in outcome.close_codes.items()
        if not set(codes) <= scenario.close_codes
    }
    assert unexpected == {}, f"allowed: {sorted(scenario.close_codes)}"
