"""The landing page, and wwws.js's reconnect policy run in the browser itself."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import jwt
import pytest
from harness import Pages, Stack
from helpers import SECRET
from partition import Partition
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_landing_links_the_three_apps(pages: Pages, stack: Stack, screenshots: Path) -> None:
    page = pages.open(stack.url("chat"))
    expect(page).to_have_title("wwws · Wide World of WebSockets")
    for app in ("chat", "ticker", "telephony"):
        expect(page.get_by_test_id(f"app-{app}")).to_have_attribute("href", f"/{app}/")
    page.screenshot(path=screenshots / "landing.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=screenshots / "landing-phone.png", full_page=True)
    page.get_by_test_id("app-chat").click()
    expect(page.get_by_test_id("join")).to_be_visible()


POLICY = """async () => {
  const { reconnectPolicy } = await import("./wwws.js");
  const high = () => 0.999;
  return {
    normal: reconnectPolicy(1000, 0, high),
    away: reconnectPolicy(1001, 0, high),
    awayAgain: reconnectPolicy(1001, 1, high),
    unauthorized: reconnectPolicy(4001, 0, high),
    violation: reconnectPolicy(4099, 3, high),
    internal: reconnectPolicy(1011, 0, high),
    slow: reconnectPolicy(4108, 2, high),
    limited: reconnectPolicy(4129, 20, high),
    dropped: reconnectPolicy(1006, 1, () => 0),
    tooBig: reconnectPolicy(1009, 0, high),
  };
}"""


def test_reconnect_policy_follows_the_close_code(pages: Pages, stack: Stack) -> None:
    page = pages.open(stack.url("chat", "chat/"))
    got = page.evaluate(POLICY)
    stop = {"reconnect": False, "delay": 0}
    assert got["normal"] == stop
    assert got["unauthorized"] == stop
    assert got["violation"] == stop
    assert got["tooBig"] == stop  # the client's own fault: it would only repeat it
    assert got["away"] == {"reconnect": True, "delay": 0}
    # Backoff with full jitter: random in [0, min(15 s, 0.5 s * 2^attempt)].
    assert got["awayAgain"] == {"reconnect": True, "delay": 999}
    assert got["internal"] == {"reconnect": True, "delay": 500}
    assert got["slow"] == {"reconnect": True, "delay": 1998}
    assert got["limited"] == {"reconnect": True, "delay": 14985}
    assert got["dropped"] == {"reconnect": True, "delay": 0}


TOKEN_LIFE = """async (withFunction) => {
  const { WwwsClient } = await import("./wwws.js");
  const seen = { codes: [], refreshed: 0, hellos: 0 };
  const first = await window.shortToken();
  const token = withFunction ? async () => ({ token: await window.shortToken() }) : first;
  const client = new WwwsClient({ service: "chat", token });
  client.addEventListener("refreshed", () => seen.refreshed++);
  client.addEventListener("hello", () => seen.hellos++);
  client.addEventListener("close", (event) => seen.codes.push(event.detail.code));
  client.connect();
  await new Promise((resolve) => setTimeout(resolve, 4500));
  seen.state = client.state;
  client.close();
  return seen;
}"""


def test_wwws_js_refreshes_its_token_over_the_socket(pages: Pages, stack: Stack) -> None:
    """Tokens of 2 s: the server asks for a new one halfway through each; a token function
    answers it on the same connection, a fixed token ends with 4010 and stops."""
    page = pages.open(stack.url("chat", "chat/"))
    page.expose_function(
        "shortToken",
        lambda: jwt.encode(
            {"sub": "refresher", "iat": int(time.time()), "exp": int(time.time()) + 2}, SECRET
        ),
    )
    renewed = page.evaluate(TOKEN_LIFE, True)
    assert renewed["hellos"] == 1 and renewed["codes"] == [], renewed
    assert renewed["refreshed"] >= 2 and renewed["state"] == "open", renewed
    fixed = page.evaluate(TOKEN_LIFE, False)
    assert fixed["codes"] == [4010] and fixed["state"] == "closed", fixed


SILENCE = """async () => {
  const { devLogin, WwwsClient } = await import("./wwws.js");
  const seen = { closes: [], hellos: 0, heartbeat: null };
  const client = new WwwsClient({ service: "chat", token: () => devLogin("quiet") });
  const next = (type) => new Promise((resolve) =>
    client.addEventListener(type, (event) => resolve(event.detail), { once: true }));
  client.addEventListener("hello", (event) => {
    seen.hellos++;
    seen.heartbeat = event.detail.heartbeat;
  });
  client.addEventListener("close", (event) => seen.closes.push(event.detail.code));
  const hello = next("hello");
  client.connect();
  await hello;
  // quiet but alive: nothing to say for 4 intervals + 5 s, yet no reconnect (it asks `ping`)
  await new Promise((resolve) => setTimeout(resolve, 9000));
  seen.quietCloses = seen.closes.length;
  const closed = next("close");
  const frozenAt = Date.now();
  await window.freeze();
  await closed;
  seen.silentFor = (Date.now() - frozenAt) / 1000;
  const again = next("hello");
  await window.thaw();
  await again;
  seen.state = client.state;
  client.close();
  return seen;
}"""


def test_wwws_js_reconnects_when_the_server_goes_silent(pages: Pages, stack: Stack) -> None:
    """A browser never sees the server's pings: wwws.js asks `ping` after a quiet interval
    and gives up a connection after 2 intervals + 5 s with no frame at all. A forwarder
    that freezes (forwards nothing, closes nothing) stands for a server that vanished."""
    with socket.socket() as probe:  # a free port for the replica, known before it starts
        probe.bind(("127.0.0.1", 0))
        replica_port = probe.getsockname()[1]
    forwarder = Partition(f"http://127.0.0.1:{replica_port}")
    stack.run(forwarder.__aenter__())
    try:
        origin = f"http://127.0.0.1:{forwarder.port}"
        stack.add_replica(
            "chat", "chat-quiet", replica_port, heartbeat_seconds=1.0, allowed_origins=(origin,)
        )
        page = pages.open(f"{origin}/chat/")
        page.expose_function("freeze", forwarder.freeze)
        page.expose_function("thaw", forwarder.thaw)
        seen = page.evaluate(SILENCE)
    finally:
        stack.run(forwarder.__aexit__(None, None, None))
        stack.remove_replica("chat-quiet")
    assert seen["heartbeat"] == 1.0 and seen["quietCloses"] == 0, seen
    assert seen["closes"][0] == 1006, seen
    # 7 s (2 intervals + 5 s) after the last frame heard, which came up to an interval
    # before the freeze: the close comes well before a TCP timeout would end it
    assert 5.5 <= seen["silentFor"] <= 12, seen
    assert seen["hellos"] == 2 and seen["state"] == "open", seen


@pytest.mark.parametrize("service", ["chat", "ticker", "telephony", "admin"])
def test_pages_carry_their_security_headers_and_refuse_injected_script(
    pages: Pages, stack: Stack, service: str
) -> None:
    """Every page loads under its CSP without a violation (the harness fails on one), and
    a script injected into it does not run; only telephony may ask for the microphone."""
    page = pages.open(stack.url(service, f"{service}/"))
    response = page.request.get(stack.url(service, f"{service}/"))
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    media = "(self)" if service == "telephony" else "()"
    assert f"microphone={media}" in response.headers["permissions-policy"]
    page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.injected = true"; document.body.append(s); }"""
    )
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.injected") is None
    assert any("CSP violation: script-src" in error for error in pages.errors), pages.errors
    pages.errors.clear()  # the violation this test caused on purpose
