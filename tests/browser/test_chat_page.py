"""The chat page: two people talking, history on join, resume after a dropped socket."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from flows import join_chat as join
from flows import message, send
from harness import Pages, Stack
from helpers import SECRET
from playwright.sync_api import expect

from services.kit.auth import mint_token
from services.kit.connection import Connection

pytestmark = pytest.mark.browser


def connections(stack: Stack, user: str) -> list[Connection]:
    return [c for c in stack.context("chat").replica.connections if c.user == user]


def test_two_people_talk_both_ways(pages: Pages, stack: Stack, screenshots: Path) -> None:
    room = f"room-{secrets.token_hex(3)}"
    alice = join(pages, stack, "alice", room)
    send(alice, "first, before bob came")

    bob = join(pages, stack, "bob", room)
    # The join shows the room's history window.
    expect(message(bob, "first, before bob came")).to_have_attribute("data-user", "alice")

    send(alice, "hello bob")
    send(bob, "hi alice!")
    for page in (alice, bob):
        expect(message(page, "hello bob")).to_have_attribute("data-user", "alice")
        expect(message(page, "hello bob").locator(".user")).to_have_text("alice")
        expect(message(page, "hi alice!")).to_have_attribute("data-user", "bob")
        expect(page.get_by_test_id("message")).to_have_count(3)
    # One's own messages are told apart from the others'.
    expect(message(alice, "hello bob")).to_have_class("message mine")
    expect(message(bob, "hello bob")).to_have_class("message")

    for page in (alice, bob):
        expect(page.get_by_test_id("members").locator("li")).to_have_text(["alice", "bob"])

    alice.screenshot(path=screenshots / "chat-alice.png")
    bob.set_viewport_size({"width": 390, "height": 760})
    bob.screenshot(path=screenshots / "chat-bob-phone.png")
    bob.close()  # bob's tab goes away: he leaves the room
    expect(alice.get_by_test_id("members").locator("li")).to_have_text(["alice"])


def test_the_member_list_follows_a_burst_of_joins_and_leaves(pages: Pages, stack: Stack) -> None:
    """40 people join in one burst and leave in another: the page hears coalesced
    `members_diff` frames, not 80 events, and its list ends right."""
    room = f"burst-{secrets.token_hex(3)}"
    frames: list[str] = []
    alice = join(pages, stack, "alice", room, frames=frames)
    expect(alice.get_by_test_id("members").locator("li")).to_have_text(["alice"])
    url = stack.url("chat", "chat/ws").replace("http", "ws", 1)
    origin = stack.url("chat").rstrip("/")
    names = [f"guest{n:02}" for n in range(40)]

    async def crowd(leave: asyncio.Event, joined: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            sockets = [
                await session.ws_connect(
                    url, params={"token": mint_token(name, SECRET)}, origin=origin
                )
                for name in names
            ]
            for ws in sockets:
                await ws.send_json({"op": "sub", "id": 1, "ch": room})
            joined.set()
            await leave.wait()
            await asyncio.gather(*(ws.close() for ws in sockets))

    leave, joined = asyncio.Event(), asyncio.Event()
    done = asyncio.run_coroutine_threadsafe(crowd(leave, joined), stack.loop)
    members = alice.get_by_test_id("members").locator("li")
    expect(members).to_have_count(41)
    expect(members.first).to_have_text("alice")
    stack.loop.call_soon_threadsafe(leave.set)
    done.result(10)
    expect(members).to_have_text(["alice"])
    events = [f for f in frames if '"op":"members_diff"' in f or '"op":"join"' in f]
    events += [f for f in frames if '"op":"leave"' in f]
    assert any('"op":"members_diff"' in f for f in frames), frames
    assert len(events) < 40, f"{len(events)} membership frames for 80 changes"


def test_messages_fan_out_across_replicas(pages: Pages, stack: Stack) -> None:
    if "chat-2" not in stack.ports:
        stack.add_replica("chat", "chat-2")
    room = f"room-{secrets.token_hex(3)}"
    alice = join(pages, stack, "alice", room)
    bob = join(pages, stack, "bob", room, node="chat-2")  # shows the replica it landed on
    send(alice, "from replica 1")
    send(bob, "from replica 2")
    for page in (alice, bob):
        texts = page.get_by_test_id("message").locator(".text")
        expect(texts).to_have_text(["from replica 1", "from replica 2"])
        expect(page.get_by_test_id("members").locator("li")).to_have_text(["alice", "bob"])


def test_resumes_on_another_replica_after_its_own_went_away(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    stack.add_replica("chat", "chat-3")
    port = stack.ports["chat-3"]
    alice = join(pages, stack, "alice", room, node="chat-3")
    send(alice, "before the deploy")

    stack.remove_replica("chat-3")  # 1001, then nothing listens: the page backs off
    expect(alice.get_by_test_id("status")).to_have_text("waiting")
    expect(alice.get_by_test_id("notice")).to_contain_text("Connection lost")
    publish_as(stack, room, "bob", ["said during the deploy"])

    # A new replica takes the address, as Traefik would route to a healthy one.
    stack.add_replica("chat", "chat-4", port=port)
    expect(alice.get_by_test_id("node")).to_have_text("chat-4")
    expect(alice.get_by_test_id("notice")).to_contain_text("1 missed message recovered")
    texts = alice.get_by_test_id("message").locator(".text")
    expect(texts).to_have_text(["before the deploy", "said during the deploy"])
    send(alice, "after the deploy")
    expect(texts).to_have_text(["before the deploy", "said during the deploy", "after the deploy"])


def test_join_form_on_a_phone(pages: Pages, stack: Stack, screenshots: Path) -> None:
    page = pages.open(
        stack.url("chat", "chat/"),
        viewport={"width": 390, "height": 760},
        is_mobile=True,
        has_touch=True,
    )
    page.get_by_test_id("name").fill("not a valid name!")
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("join-error")).to_contain_text("Names are")
    page.screenshot(path=screenshots / "chat-join-phone.png")


def test_resumes_after_the_server_drops_the_socket(
    pages: Pages, stack: Stack, screenshots: Path
) -> None:
    room = f"room-{secrets.token_hex(3)}"
    alice = join(pages, stack, "alice", room)
    send(alice, "before the drop")
    [conn] = connections(stack, "alice")
    hub = stack.context("chat").hub

    async def drop_while_bob_talks() -> None:
        # Deterministic "missed while away": take alice off the live feed, publish as
        # bob would, then close her socket the way a draining replica does (1001).
        await hub.unsubscribe(conn, room)
        data = {"text": "said while you were away", "user": "bob", "ts": time.time() * 1000}
        await hub.publish(room, orjson.dumps(data))
        await conn.close_and_wait(1001, "server going away")

    stack.run(drop_while_bob_talks())
    notice = alice.get_by_test_id("notice")
    expect(notice).to_contain_text("resumed")
    expect(notice).to_contain_text("1 missed message recovered")
    expect(alice.get_by_test_id("status")).to_have_text("open")
    expect(message(alice, "said while you were away")).to_have_attribute("data-user", "bob")

    send(alice, "after the drop")
    texts = alice.get_by_test_id("message").locator(".text")
    expect(texts).to_have_text(["before the drop", "said while you were away", "after the drop"])
    offsets = alice.get_by_test_id("message").evaluate_all(
        "items => items.map(li => Number(li.dataset.offset))"
    )
    assert offsets == sorted(set(offsets)), "no message twice, in order"
    alice.screenshot(path=screenshots / "chat-resumed.png")


def test_does_not_reconnect_after_a_4000_range_close(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    alice = join(pages, stack, "carol", room)
    [conn] = connections(stack, "carol")
    stack.run(conn.close_and_wait(4003, "forbidden"))
    expect(alice.get_by_test_id("status")).to_have_text("closed")
    expect(alice.get_by_test_id("notice")).to_contain_text("Disconnected (4003")
    alice.wait_for_timeout(700)  # long enough for a (wrong) reconnect to show up
    assert connections(stack, "carol") == []
    expect(alice.get_by_test_id("status")).to_have_text("closed")


def test_reconnects_with_backoff_after_a_4100_range_close(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    dave = join(pages, stack, "dave", room)
    [conn] = connections(stack, "dave")
    stack.run(conn.close_and_wait(4108, "outbound queue full"))
    # Full jitter: the first retry comes within 0.5 s (the first backoff ceiling).
    expect(dave.get_by_test_id("notice")).to_contain_text("resumed")
    expect(dave.get_by_test_id("status")).to_have_text("open")
    assert dave.evaluate("window.wwwsClient.connects") == 2
    assert len(connections(stack, "dave")) == 1


def publish_as(stack: Stack, room: str, user: str, texts: list[str]) -> None:
    """Messages from another replica's user, straight into the backplane."""
    hub = stack.hub("chat")

    async def publish() -> None:
        for text in texts:
            data = {"text": text, "user": user, "ts": time.time() * 1000}
            await hub.publish(room, orjson.dumps(data))

    stack.run(publish())


def test_join_shows_a_window_and_older_pages_in(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    publish_as(stack, room, "bob", [f"message {n}" for n in range(1, 71)])
    alice = join(pages, stack, "alice", room)
    texts = alice.get_by_test_id("message").locator(".text")
    expect(texts).to_have_count(50)  # the room's history window
    expect(texts.first).to_have_text("message 21")
    expect(texts.last).to_have_text("message 70")

    alice.get_by_test_id("older").click()
    expect(texts).to_have_count(70)
    expect(texts.first).to_have_text("message 1")
    expect(texts.nth(20)).to_have_text("message 21")
    alice.get_by_test_id("older").click()
    expect(alice.get_by_test_id("older")).to_have_text("No older")
    expect(alice.get_by_test_id("older")).to_be_disabled()


def test_a_reset_history_is_announced_not_silent(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    alice = join(pages, stack, "alice", room)
    send(alice, "from the old history")
    chat = stack.context("chat")

    async def lose_the_stream() -> None:
        # As when Redis loses its data: the stream restarts under a new epoch.
        chat.backplane.drop_stream(chat.hub.backplane_channel(room))

    stack.run(lose_the_stream())
    publish_as(stack, room, "bob", ["first of the new history"])
    expect(alice.get_by_test_id("notice")).to_contain_text("history of #" + room + " was reset")
    texts = alice.get_by_test_id("message").locator(".text")
    expect(texts).to_have_text(["first of the new history"])
    send(alice, "still talking")
    expect(texts).to_have_text(["first of the new history", "still talking"])


def test_a_token_in_the_address_skips_the_login(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    token = mint_token("zoe", SECRET)
    page = pages.open(stack.url("chat", f"chat/?room={room}#token={token}"))
    expect(page.get_by_test_id("status")).to_have_text("open")
    expect(page.get_by_test_id("me")).to_have_text("zoe")
    expect(page.get_by_test_id("room-name")).to_have_text(room)
    assert "token" not in page.url  # taken out of the address bar and history
    send(page, "no dev login needed")
    expect(message(page, "no dev login needed")).to_have_attribute("data-user", "zoe")


def test_says_so_when_the_dev_login_is_off(pages: Pages, stack: Stack) -> None:
    if "chat-prod" not in stack.ports:
        stack.add_replica("chat", "chat-prod", dev_login=False)
    page = pages.open(stack.url("chat-prod", "chat/"))
    page.get_by_test_id("name").fill("alice")
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("join-error")).to_contain_text("dev login is off")
    expect(page.get_by_test_id("join-error")).to_contain_text("#token=")
