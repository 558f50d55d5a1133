"""What a person does on each page, shared by the browser tests."""

from __future__ import annotations

from harness import Pages, Stack
from playwright.sync_api import Locator, Page, expect


def join_chat(
    pages: Pages,
    stack: Stack,
    user: str,
    room: str,
    node: str = "chat-1",
    frames: list[str] | None = None,
    **options: object,
) -> Page:
    """Join ``room`` on the chat replica ``node`` (see Stack.add_replica); ``frames``
    collects every frame the page's sockets receive."""
    page = pages.open(stack.url("chat" if node == "chat-1" else node, "chat/"), **options)
    if frames is not None:
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))
    page.get_by_test_id("name").fill(user)
    page.get_by_test_id("room").fill(room)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("status")).to_have_text("open")
    expect(page.get_by_test_id("node")).to_have_text(node)
    expect(page.get_by_test_id("me")).to_have_text(user)
    return page


def send(page: Page, text: str) -> None:
    page.get_by_test_id("text").fill(text)
    page.get_by_test_id("text").press("Enter")
    expect(page.get_by_test_id("text")).to_have_value("")  # cleared once acked


def message(page: Page, text: str) -> Locator:
    return page.get_by_test_id("message").filter(has_text=text)


def sign_in_ticker(pages: Pages, stack: Stack, user: str, **options: object) -> Page:
    page = pages.open(stack.url("ticker", "ticker/"), **options)
    page.get_by_test_id("name").fill(user)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("status")).to_have_text("open")
    expect(page.get_by_test_id("node")).to_have_text("ticker-1")
    return page


def go_online(
    pages: Pages, stack: Stack, user: str, node: str = "telephony-1", **options: object
) -> Page:
    server = "telephony" if node == "telephony-1" else node
    page = pages.open(stack.url(server, "telephony/"), **options)
    page.get_by_test_id("name").fill(user)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("status")).to_have_text("open")
    expect(page.get_by_test_id("node")).to_have_text(node)
    return page
