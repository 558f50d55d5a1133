"""The telephony page's calls: ring, answer, audio both ways over WebRTC, hang up.

The two people are on different replicas of the telephony service (one backplane), as
they would be behind Traefik: the call's state and signals cross between them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flows import go_online
from harness import Pages, Stack
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

OTHER = "telephony-2"  # the callee's replica
QUICK = "telephony-quick"  # a replica whose calls ring for two seconds only


@pytest.fixture(scope="module")
def replicas(stack: Stack) -> Iterator[Stack]:
    stack.add_replica("telephony", OTHER)
    stack.add_replica("telephony", QUICK, ring_timeout_seconds=2.0)
    yield stack


def online_pair(
    pages: Pages, stack: Stack, caller: str, callee: str, caller_node: str = "telephony-1"
) -> tuple[Page, Page]:
    a = go_online(pages, stack, caller, node=caller_node, viewport={"width": 390, "height": 700})
    b = go_online(pages, stack, callee, node=OTHER)
    a.get_by_test_id("watch-user").fill(callee)
    a.get_by_test_id("watch").click()
    expect(a.get_by_test_id(f"status-{callee}")).to_have_text("online")
    return a, b


def test_call_answered_with_audio_both_ways_then_hung_up(
    pages: Pages, replicas: Stack, screenshots: Path
) -> None:
    alice, bob = online_pair(pages, replicas, "alice", "bob")
    alice.get_by_test_id("call-bob").click()
    expect(alice.get_by_test_id("call-state")).to_have_text("Ringing bob…")
    expect(bob.get_by_test_id("call-state")).to_have_text("alice is calling you")
    expect(bob).to_have_title("Call from alice · wwws")  # seen from a background tab
    expect(alice.get_by_test_id("call-bob")).to_be_disabled()  # one call at a time

    bob.get_by_test_id("answer").click()
    expect(bob).to_have_title("wwws telephony")
    expect(alice.get_by_test_id("call-state")).to_have_text("In a call with bob")
    expect(bob.get_by_test_id("call-state")).to_have_text("In a call with alice")
    for page in (alice, bob):
        # WebRTC over loopback with the fake microphone: the peers connect, and each
        # hears the other's audio track.
        expect(page.get_by_test_id("media-state")).to_have_text("connected")
        tracks = page.evaluate(
            "document.getElementById('remote-audio').srcObject.getAudioTracks().length"
        )
        assert tracks == 1
    alice.screenshot(path=screenshots / "telephony-call-phone.png")

    alice.get_by_test_id("hangup").click()
    expect(alice.get_by_test_id("call")).to_be_hidden()
    expect(bob.get_by_test_id("call")).to_be_hidden()
    expect(bob.get_by_test_id("notice")).to_have_text("Call with alice ended (hangup).")
    expect(alice.get_by_test_id("call-bob")).to_be_enabled()


def test_a_declined_call(pages: Pages, replicas: Stack) -> None:
    carol, dave = online_pair(pages, replicas, "carol", "dave")
    carol.get_by_test_id("call-dave").click()
    expect(dave.get_by_test_id("call-state")).to_have_text("carol is calling you")
    dave.get_by_test_id("reject").click()
    expect(carol.get_by_test_id("notice")).to_have_text("dave declined.")
    expect(carol.get_by_test_id("call")).to_be_hidden()
    expect(dave.get_by_test_id("call")).to_be_hidden()


def test_a_cancelled_call_is_a_missed_call(pages: Pages, replicas: Stack) -> None:
    erin, frank = online_pair(pages, replicas, "erin", "frank")
    erin.get_by_test_id("call-frank").click()
    expect(frank.get_by_test_id("call-state")).to_have_text("erin is calling you")
    expect(erin.get_by_test_id("hangup")).to_have_text("Cancel")
    erin.get_by_test_id("hangup").click()
    expect(frank.get_by_test_id("call")).to_be_hidden()
    expect(frank.get_by_test_id("notice")).to_have_text("Missed call from erin.")


def test_an_unanswered_call_rings_out(pages: Pages, replicas: Stack) -> None:
    gina, hal = online_pair(pages, replicas, "gina", "hal", caller_node=QUICK)
    gina.get_by_test_id("call-hal").click()
    expect(hal.get_by_test_id("call-state")).to_have_text("gina is calling you")
    expect(gina.get_by_test_id("notice")).to_have_text("hal did not answer.")
    expect(hal.get_by_test_id("notice")).to_have_text("Missed call from gina.")
    expect(hal.get_by_test_id("call")).to_be_hidden()
