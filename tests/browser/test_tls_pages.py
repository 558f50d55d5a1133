"""The pages over https + wss, as users reach them, with a verified certificate.

The services serve https://localhost:<port> with a server certificate from the project's
local CA (tools.localca). Chromium trusts exactly that certificate's key
(``--ignore-certificate-errors-spki-list``), never "any certificate": a browser without
the pin refuses the same page, which the last test shows.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from flows import go_online, join_chat, message, send, sign_in_ticker
from harness import Chromium, Pages, Stack, launch
from playwright.sync_api import Browser, Error, Playwright, expect

try:  # the local CA tool needs the `ops` extra (the Makefile's test targets include it)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tools import localca
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"{missing}: the TLS page tests need the ops extra: `uv run --extra ops pytest`"
    ) from missing

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    localca.ensure(directory)
    return directory


def spki_pin(certificate: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): how Chromium names a key it should trust."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def stack(certs: Path) -> Iterator[Stack]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / localca.SERVER_CERT, certs / localca.SERVER_KEY)
    servers = Stack(tls=context)
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def browser(chromium: Chromium, certs: Path) -> Browser:
    pin = spki_pin(certs / localca.SERVER_CERT)
    return chromium.browser(f"--ignore-certificate-errors-spki-list={pin}")


def test_chat_over_wss(pages: Pages, stack: Stack) -> None:
    room = f"room-{secrets.token_hex(3)}"
    alice = join_chat(pages, stack, "alice", room)
    bob = join_chat(pages, stack, "bob", room)
    # Under https the client must pick wss:// on the page's own host and port.
    socket_url = alice.evaluate("window.wwwsClient.ws.url")
    assert socket_url.startswith(f"wss://localhost:{stack.ports['chat']}/chat/ws?token=")
    assert alice.evaluate("window.isSecureContext") is True
    send(alice, "over TLS")
    send(bob, "both ways")
    for page in (alice, bob):
        expect(message(page, "over TLS")).to_have_attribute("data-user", "alice")
        expect(message(page, "both ways")).to_have_attribute("data-user", "bob")


def test_ticker_and_telephony_over_wss(pages: Pages, stack: Stack) -> None:
    ticker = sign_in_ticker(pages, stack, "alice")
    assert ticker.evaluate("window.wwwsClient.ws.url").startswith("wss://")
    alice = go_online(pages, stack, "alice")
    assert alice.evaluate("window.wwwsClient.ws.url").startswith("wss://")
    alice.get_by_test_id("watch-user").fill("bob")
    alice.get_by_test_id("watch").click()
    expect(alice.get_by_test_id("status-bob")).to_have_text("offline")


def test_the_certificate_is_really_checked(
    playwright: Playwright, chromium_path: str, stack: Stack
) -> None:
    """Without the pin the same page is refused: the other tests do verify the certificate."""
    unpinned = launch(playwright, chromium_path)
    try:
        page = unpinned.new_page()
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(stack.url("chat", "chat/"))
    finally:
        unpinned.close()
