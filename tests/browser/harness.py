"""The browser tests' harness: the services in-process, Chromium, and pages.

Test modules import from here (``from harness import ...``), never from ``conftest``: with
several conftest.py files in one run, the module named ``conftest`` is whichever was
loaded last.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aiohttp import web
from helpers import SECRET
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from services.admin.app import create_app as create_admin
from services.chat.app import create_app as create_chat
from services.kit.app import CONTEXT
from services.kit.backplane import MemoryBackplane, MemoryState
from services.kit.hub import ChannelHub
from services.kit.service import ServiceContext
from services.kit.settings import Settings
from services.telephony.app import create_app as create_telephony
from services.ticker.app import create_app as create_ticker

T = TypeVar("T")

CHROMIUM = os.environ.get("WWWS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    # A fake microphone, allowed without a prompt: the telephony page's calls need one.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
API_KEY = "browser-test-api-key"
FACTORIES = {
    "chat": create_chat,
    "ticker": create_ticker,
    "telephony": create_telephony,
    "admin": create_admin,  # its admin key is API_KEY
}
# Everything here happens in milliseconds on loopback; the slack is for a loaded CI machine.
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Stack:
    """chat, ticker, telephony and the admin console on one background loop, one port
    each."""

    state: MemoryState = field(default_factory=MemoryState)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    ports: dict[str, int] = field(default_factory=dict)
    apps: dict[str, web.Application] = field(default_factory=dict)
    runners: dict[str, web.AppRunner] = field(default_factory=dict)
    thread: threading.Thread | None = None
    #: serve https (and so wss) with this context, at ``localhost`` as the certificate says
    tls: ssl.SSLContext | None = None

    @property
    def origin_host(self) -> str:
        return "https://localhost" if self.tls else "http://127.0.0.1"

    def url(self, service: str, path: str = "") -> str:
        return f"{self.origin_host}:{self.ports[service]}/{path}"

    def context(self, service: str) -> ServiceContext:
        return self.apps[service][CONTEXT]

    def hub(self, service: str) -> ChannelHub:
        """A publisher of our own, like another replica or the ticker feed."""
        return ChannelHub(MemoryBackplane(self.state), service)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the servers' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        sockets = {service: self._reserve(service) for service in FACTORIES}
        # Every page may open a socket to any of the three (the landing page links them).
        origins = tuple(f"{self.origin_host}:{port}" for port in self.ports.values())
        for service, factory in FACTORIES.items():
            settings = self._settings(service, f"{service}-1", origins)
            self.apps[service] = factory(settings, MemoryBackplane(self.state))
        self.thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self.thread.start()
        for service in FACTORIES:
            self.run(self._listen(service, sockets[service]))

    def add_replica(
        self,
        service: str,
        node: str,
        port: int | None = None,
        **overrides: Any,
    ) -> None:
        """Another replica of ``service`` on its own port (or ``port``, to stand in for one
        that was removed), sharing the backplane; reach it as ``url(node, ...)``. Like
        replicas behind Traefik, minus the proxy."""
        sock = self._reserve(node, port)
        origin = f"{self.origin_host}:{self.ports[node]}"
        settings = replace(self._settings(service, node, (origin,)), **overrides)
        self.apps[node] = FACTORIES[service](settings, MemoryBackplane(self.state))
        self.run(self._listen(node, sock))

    def remove_replica(self, node: str) -> None:
        """Stop a replica as a deploy does: its sockets are closed with 1001."""
        self.run(self.runners.pop(node).cleanup())

    def _reserve(self, name: str, port: int | None = None) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port or 0))
        self.ports[name] = sock.getsockname()[1]
        return sock

    @staticmethod
    def _settings(service: str, node: str, origins: tuple[str, ...]) -> Settings:
        return Settings(
            service=service,
            token_secret=SECRET,
            allowed_origins=origins,
            node_id=node,
            dev_login=True,
            api_key=API_KEY,
            report_seconds=0.5,  # the admin console's updates, quicker than the default 2 s
        )

    async def _listen(self, name: str, sock: socket.socket) -> None:
        runner = web.AppRunner(self.apps[name], access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self.runners[name] = runner
        await web.SockSite(runner, sock, ssl_context=self.tls).start()

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners.values():
                await runner.cleanup()

        try:
            self.run(cleanup(), timeout=20.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self.thread is not None:
                self.thread.join(10.0)
            self.loop.close()


def launch(playwright: Playwright, chromium_path: str, *extra_args: str) -> Browser:
    """Debian's Chromium, headless, with the flags verified on these machines."""
    return playwright.chromium.launch(
        executable_path=chromium_path, args=[*CHROMIUM_ARGS, *extra_args]
    )


class Chromium:
    """Playwright and the browsers it launched: started on first use, shared by the
    browser tests, and stopped before any other test runs. (While Playwright's sync API
    is started, the main thread looks like it runs an event loop, which breaks the asyncio
    tests; one launch for all browser tests instead of one per module saves seconds.)"""

    def __init__(self, path: str) -> None:
        self.path = path
        self._playwright: Playwright | None = None
        self._browsers: dict[tuple[str, ...], Browser] = {}

    @property
    def playwright(self) -> Playwright:
        if self._playwright is None:
            self._playwright = sync_playwright().start()
        return self._playwright

    def browser(self, *extra_args: str) -> Browser:
        if extra_args not in self._browsers:
            self._browsers[extra_args] = launch(self.playwright, self.path, *extra_args)
        return self._browsers[extra_args]

    def stop(self) -> None:
        for browser in self._browsers.values():
            browser.close()
        self._browsers.clear()
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None


CSP_REPORTER = """document.addEventListener("securitypolicyviolation", (event) =>
  console.error(`wwws: CSP violation: ${event.violatedDirective} ${event.blockedURI}`));"""


class Pages:
    """Opens pages, each in its own browser context (its own storage, like a person),
    and fails the test on any uncaught script error in them."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def open(self, url: str, **context_options: Any) -> Page:
        options = {"viewport": {"width": 1100, "height": 760}, **context_options}
        context = self.browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        # A page that breaks its own Content-Security-Policy (an inline script without its
        # hash, a foreign connection) fails the test like a script error.
        context.add_init_script(CSP_REPORTER)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{url}: {error}"))
        # Chromium logs refused or dropped sockets as console errors, which some tests
        # cause on purpose; only errors our own code reports ("wwws: ...") count.
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"{url}: {message.text}")
                if message.type == "error" and message.text.startswith("wwws:")
                else None
            ),
        )
        page.goto(url)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()
