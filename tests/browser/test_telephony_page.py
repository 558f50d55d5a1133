"""The telephony page: watching a contact come online and go offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from flows import go_online
from harness import Pages, Stack
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_sees_bob_come_online_and_go_offline(pages: Pages, stack: Stack, screenshots: Path) -> None:
    alice = go_online(pages, stack, "alice", viewport={"width": 390, "height": 700})
    for user in ("bob", "carol"):
        alice.get_by_test_id("watch-user").fill(user)
        alice.get_by_test_id("watch").click()
    bob_status = alice.get_by_test_id("status-bob")
    expect(bob_status).to_have_text("offline")
    expect(alice.get_by_test_id("status-carol")).to_have_text("offline")

    bob = go_online(pages, stack, "bob")
    expect(bob_status).to_have_text("online")
    expect(alice.get_by_test_id("dot-bob")).to_have_attribute("data-status", "online")
    expect(alice.get_by_test_id("status-carol")).to_have_text("offline")
    alice.screenshot(path=screenshots / "telephony-phone.png")

    bob.close()  # the tab goes away: its socket closes, the server announces it
    expect(bob_status).to_have_text("offline")
    expect(alice.get_by_test_id("dot-bob")).to_have_attribute("data-status", "offline")


def test_watch_list_is_remembered_and_rewatched(pages: Pages, stack: Stack) -> None:
    page = go_online(pages, stack, "frank")
    page.get_by_test_id("watch-user").fill("grace")
    page.get_by_test_id("watch").click()
    expect(page.get_by_test_id("status-grace")).to_have_text("offline")

    # A reload is a new connection: the list comes back from storage and is watched again.
    page.reload()
    page.get_by_test_id("name").fill("frank")
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("status-grace")).to_have_text("offline")
    grace = go_online(pages, stack, "grace")
    expect(page.get_by_test_id("status-grace")).to_have_text("online")
    grace.close()
    expect(page.get_by_test_id("status-grace")).to_have_text("offline")

    page.get_by_test_id("remove-grace").click()  # unwatch: gone from the list and storage
    expect(page.get_by_test_id("person")).to_have_count(0)
    page.reload()
    page.get_by_test_id("name").fill("frank")
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("status")).to_have_text("open")
    expect(page.get_by_test_id("person")).to_have_count(0)
