"""The admin console in Chromium: sign-in with the admin key, the live replica table and
busiest channels pushed over its socket, publishing into a room, a presence lookup,
revoking a user."""

from __future__ import annotations

from pathlib import Path

import pytest
from flows import join_chat, message
from harness import API_KEY, Pages, Stack
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def open_console(pages: Pages, stack: Stack, key: str = API_KEY) -> Page:
    page = pages.open(stack.url("admin", "admin/"))
    page.get_by_test_id("key").fill(key)
    page.get_by_test_id("login").click()
    return page


def test_a_wrong_key_is_refused_and_the_console_stays_closed(pages: Pages, stack: Stack) -> None:
    page = open_console(pages, stack, key="not-the-key")
    expect(page.get_by_test_id("login-error")).to_have_text("wrong admin key")
    expect(page.get_by_test_id("replicas")).to_be_hidden()


def test_console_shows_replicas_and_channels_live_and_acts(
    pages: Pages, stack: Stack, screenshots: Path
) -> None:
    chat = join_chat(pages, stack, "ann", "ops-room")
    page = open_console(pages, stack)
    expect(page.get_by_test_id("status")).to_have_text("open")
    rows = page.get_by_test_id("replica")
    for service in ("chat", "ticker", "telephony", "admin"):
        expect(rows.and_(page.locator(f"[data-service={service}]"))).to_have_count(1)
    chat_row = page.locator("[data-testid=replica][data-service=chat]")
    expect(chat_row.get_by_test_id("connections")).to_have_text("1")
    expect(chat_row.get_by_test_id("state")).to_have_text("serving")
    expect(chat_row.locator("canvas")).to_have_count(1)
    expect(page.get_by_test_id("channel").filter(has_text="chat/ops-room")).to_have_text(
        "chat/ops-room — 1 subscriber"
    )

    # a second person joins: the next push counts them
    ben = join_chat(pages, stack, "ben", "ops-room")
    expect(chat_row.get_by_test_id("connections")).to_have_text("2")
    expect(page.get_by_test_id("channel").filter(has_text="chat/ops-room")).to_have_text(
        "chat/ops-room — 2 subscribers"
    )

    page.get_by_test_id("pub-channel").fill("ops-room")
    page.get_by_test_id("pub-text").fill("maintenance at noon")
    page.get_by_test_id("publish").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("Published to chat/ops-room")
    expect(message(chat, "maintenance at noon")).to_be_visible()
    expect(message(chat, "maintenance at noon")).to_contain_text("admin")

    page.get_by_test_id("lookup-user").fill("ann")
    page.get_by_test_id("lookup").click()
    expect(page.get_by_test_id("action-result")).to_have_text(
        "ann: offline in telephony; chat rooms: ops-room."
    )
    # revoking ben closes his page for good (4011); ann is untouched
    page.get_by_test_id("revoke-user").fill("ben")
    page.get_by_test_id("revoke").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("ben: disconnected everywhere")
    expect(ben.get_by_test_id("status")).to_have_text("closed")
    expect(ben.get_by_test_id("notice")).to_contain_text("4011")
    expect(chat.get_by_test_id("status")).to_have_text("open")
    page.screenshot(path=str(screenshots / "admin-console.png"), full_page=True)
