"""Browser tests: the real pages in Debian's Chromium (headless, driven by Playwright).

The three services run in-process on a background event loop, each on its own
http://127.0.0.1:<port> (loopback is a secure context, as https is), sharing one memory
backplane; test_tls_pages.py serves them over https://localhost with a certificate from
the project's local CA, which Chromium trusts by its key (SPKI) alone.

Playwright never downloads a browser here: it drives /usr/bin/chromium (``apt-get install
-y chromium``), and a missing Chromium fails the tests, never skips them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import CHROMIUM, Chromium, Pages, Stack
from playwright.sync_api import Browser, Playwright


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web pages in a real Chromium")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    servers = Stack()
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = shutil.which(CHROMIUM) if not os.path.isabs(CHROMIUM) else CHROMIUM
    if not found or not os.access(found, os.X_OK):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests need Debian's Chromium. "
            "Install it with `apt-get install -y chromium` (or set WWWS_CHROMIUM to its path); "
            "Playwright must not download its own browser.",
            pytrace=False,
        )
    return found


CHROMIUM_KEY = pytest.StashKey[Chromium]()


@pytest.fixture(scope="session")
def chromium(chromium_path: str, request: pytest.FixtureRequest) -> Iterator[Chromium]:
    started = Chromium(chromium_path)
    request.config.stash[CHROMIUM_KEY] = started
    yield started
    started.stop()


@pytest.hookimpl(trylast=True)  # after the test's own fixtures (its pages) are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    here = Path(__file__).parent
    if nextitem is None or here not in Path(nextitem.path).parents:
        started = item.config.stash.get(CHROMIUM_KEY, None)
        if started is not None:
            started.stop()


@pytest.fixture
def playwright(chromium: Chromium) -> Playwright:
    return chromium.playwright


@pytest.fixture
def browser(chromium: Chromium) -> Browser:
    return chromium.browser()


SCREENSHOTS = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where pages are photographed for a human to look at (printed at the end): pytest's
    temp folder of the run (it keeps the last few runs), or WWWS_SCREENSHOTS=dir."""
    folder = os.environ.get("WWWS_SCREENSHOTS")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("screenshots", numbered=False)
    request.config.stash[SCREENSHOTS] = path
    return path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = config.stash.get(SCREENSHOTS, None)
    if path is not None:
        terminalreporter.write_line(f"browser screenshots: {path}")


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    opened.close()
    assert not opened.errors, "script errors in the page:\n" + "\n".join(opened.errors)
