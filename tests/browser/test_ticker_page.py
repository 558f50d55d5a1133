"""The ticker page: a price snapshot on load, live prices flashing, notifications."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import orjson
import pytest
from flows import sign_in_ticker as sign_in
from harness import API_KEY, Pages, Stack
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SYMBOLS = ("AAPL", "AMZN", "GOOG", "MSFT", "NVDA", "TSLA")


def publish_price(stack: Stack, symbol: str, price: float) -> None:
    """Publish like the feed does: straight into the backplane, from another 'process'."""
    payload = orjson.dumps({"symbol": symbol, "price": price, "ts": 1_700_000_000_000})
    stack.run(stack.hub("ticker").publish(symbol, payload))


def notify(stack: Stack, user: str, text: str) -> None:
    """The server-to-server publish API, as a back office would call it."""
    request = urllib.request.Request(
        stack.url("ticker", "ticker/api/publish"),
        data=json.dumps({"user": user, "data": {"text": text}}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with direct.open(request, timeout=5) as response:
        assert response.status == 200


def test_prices_snapshot_then_live_with_direction(
    pages: Pages, stack: Stack, screenshots: Path
) -> None:
    for index, symbol in enumerate(SYMBOLS):
        publish_price(stack, symbol, 100.0 + 25 * index)
    page = sign_in(pages, stack, "alice")
    aapl = page.get_by_test_id("price-AAPL")
    # The snapshot: the latest price is there as soon as the page subscribed.
    expect(aapl).to_have_text("100.00")
    expect(page.get_by_test_id("price-TSLA")).to_have_text("225.00")

    publish_price(stack, "AAPL", 101.5)
    expect(aapl).to_have_text("101.50")
    expect(aapl).to_have_attribute("data-dir", "up")
    expect(aapl).to_have_class("price flash-up")
    expect(page.get_by_test_id("change-AAPL")).to_have_text("+1.50%")

    publish_price(stack, "AAPL", 99.0)
    expect(aapl).to_have_text("99.00")
    expect(aapl).to_have_attribute("data-dir", "down")
    expect(page.get_by_test_id("change-AAPL")).to_have_text("-1.00%")

    publish_price(stack, "MSFT", 176.25)
    expect(page.get_by_test_id("price-MSFT")).to_have_text("176.25")
    page.screenshot(path=screenshots / "ticker.png")


def test_notifications_reach_only_their_user(pages: Pages, stack: Stack, screenshots: Path) -> None:
    alice = sign_in(
        pages, stack, "alice", viewport={"width": 390, "height": 800}, color_scheme="dark"
    )
    bob = sign_in(pages, stack, "bob")
    notify(stack, "alice", "Your order for 10 AAPL was filled")
    notify(stack, "alice", "Price alert: NVDA crossed 150")

    items = alice.get_by_test_id("notification")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("Price alert: NVDA crossed 150")  # newest first
    expect(items.nth(1)).to_contain_text("Your order for 10 AAPL was filled")
    bob.wait_for_timeout(200)
    expect(bob.get_by_test_id("notification")).to_have_count(0)
    alice.screenshot(path=screenshots / "ticker-phone-dark.png", full_page=True)


def test_missed_notifications_arrive_after_a_reconnect(pages: Pages, stack: Stack) -> None:
    page = sign_in(pages, stack, "erin")
    notify(stack, "erin", "one")
    expect(page.get_by_test_id("notification")).to_have_count(1)
    [conn] = [c for c in stack.context("ticker").replica.connections if c.user == "erin"]
    hub = stack.context("ticker").hub

    async def drop() -> None:
        await hub.unsubscribe(conn, "user:erin")
        await hub.publish("user:erin", orjson.dumps({"text": "two", "ts": 1}))
        await conn.close_and_wait(1001, "server going away")

    stack.run(drop())
    texts = page.get_by_test_id("notification").locator("span")
    expect(texts).to_have_text(["two", "one"])
    expect(page.get_by_test_id("status")).to_have_text("open")
    assert page.evaluate("window.wwwsClient.connects") == 2


def test_more_missed_than_the_window_are_fetched_with_since(pages: Pages, stack: Stack) -> None:
    page = sign_in(pages, stack, "ivan")
    notify(stack, "ivan", "note 1")
    expect(page.get_by_test_id("notification")).to_have_count(1)
    [conn] = [c for c in stack.context("ticker").replica.connections if c.user == "ivan"]
    hub = stack.context("ticker").hub

    async def drop() -> None:
        # 25 missed: more than the 20 the automatic subscription brings back, so the
        # page must notice the hole and ask again with `since`.
        await hub.unsubscribe(conn, "user:ivan")
        for n in range(2, 27):
            await hub.publish("user:ivan", orjson.dumps({"text": f"note {n}", "ts": 1}))
        await conn.close_and_wait(1001, "server going away")

    stack.run(drop())
    texts = page.get_by_test_id("notification").locator("span")
    expect(texts).to_have_text([f"note {n}" for n in range(26, 0, -1)])


def test_notifications_after_the_store_lost_its_data_all_arrive(pages: Pages, stack: Stack) -> None:
    """The personal channel was empty at sign-in (epoch ""), so only its offsets tell the
    page that the stream restarted: everything published into the new one must show (the
    page starts its list again on a reset, as it does for any lost history)."""
    page = sign_in(pages, stack, "frank")
    for text in ("one", "two", "three"):
        notify(stack, "frank", text)
    texts = page.get_by_test_id("notification").locator("span")
    expect(texts).to_have_count(3)
    ticker = stack.context("ticker")

    async def lose_the_stream() -> None:
        # As when Redis loses its data and the replica's pub/sub reconnects.
        channel = ticker.hub.backplane_channel("user:frank")
        ticker.backplane.drop_stream(channel)
        ticker.hub._on_resync(channel)

    stack.run(lose_the_stream())
    page.wait_for_timeout(200)  # the replica reads the (empty) stream and says so
    for text in ("four", "five"):
        notify(stack, "frank", text)
    expect(texts).to_have_text(["five", "four"])
