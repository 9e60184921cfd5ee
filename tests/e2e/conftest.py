"""The browser UI in real Chromium: Debian's `/usr/bin/chromium`, driven by Playwright.

Every test gets a fresh browser context (a new visitor) on a real `tracker serve`
process. Each page is watched: a console error, an uncaught exception, a
JavaScript dialog or a request to any other host fails the test. Notifications
and sounds are recorded by an init script, so tests can see that they happened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    Route,
    sync_playwright,
)

from tests.integration.conftest import Server, ServerFactory

CHROMIUM = Path(os.environ.get("TRACKER_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("TRACKER_ARTIFACTS", "build/e2e"))
"""Where screenshots go (not committed; CI may keep them)."""

TIMEOUT_MS = 10_000

RECORDER = """
(() => {
  window.__notifications = [];
  window.__permissionRequests = 0;
  window.__sounds = [];
  class RecordedNotification extends EventTarget {
    static permission = "default";
    static requestPermission() {
      window.__permissionRequests += 1;
      RecordedNotification.permission = "granted";
      return Promise.resolve("granted");
    }
    constructor(title, options = {}) {
      super();
      window.__notifications.push({ title, body: options.body, tag: options.tag });
    }
    close() {}
  }
  window.Notification = RecordedNotification;
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    window.__sounds.push(this.currentSrc || this.src);
    return play.call(this);
  };
})();
"""
"""Stands in for the Notification API (a headless browser has no desktop to show one on)
and notes every sound played, keeping the real `play`."""


@dataclass
class Watch:
    """What went wrong in the pages of one test."""

    origin: str
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Console errors matching `pattern` are expected in this test."""
        self.allowed.append(re.compile(pattern))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
            self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")

    def on_dialog(self, dialog: Dialog) -> None:
        self.errors.append(f"a {dialog.type} dialog opened: {dialog.message}")
        dialog.dismiss()

    def on_route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith((self.origin + "/", "data:", "blob:")):
            route.continue_()
        else:
            self.foreign_requests.append(url)
            route.abort()

    def check(self) -> None:
        assert not self.foreign_requests, f"requests left the server: {self.foreign_requests}"
        assert not self.errors, "\n".join(self.errors)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Per module, not per session: Playwright's synchronous API runs an event loop of
    # its own, which must be gone before the suite's async tests run theirs.
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's package (apt-get install chromium)")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module; each test is a new visitor, so tests do not meet."""
    factory = ServerFactory(tmp_path_factory.mktemp("server"))
    yield factory(TRACKER_BCRYPT_ROUNDS="4")
    factory.close()


@pytest.fixture
def watch(server: Server) -> Watch:
    return Watch(server.url)


@pytest.fixture
def context(browser: Browser, server: Server, watch: Watch) -> Iterator[BrowserContext]:
    """A new visitor: own cookies, watched pages, recorded notifications and sounds."""
    with visiting(browser, server.url, watch) as context:
        yield context


@contextmanager
def visiting(browser: Browser, url: str, watch: Watch, *scripts: str) -> Iterator[BrowserContext]:
    """A new visitor of `url` (its pages watched, and `scripts` run in each before its
    own); the watch is checked when it leaves."""
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    for script in (RECORDER, *scripts):
        context.add_init_script(script)
    context.route("**/*", watch.on_route)
    context.on("page", lambda page: _watch_page(page, watch))
    yield context
    context.close()
    watch.check()


def _watch_page(page: Page, watch: Watch) -> None:
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    page.on("dialog", watch.on_dialog)


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """The board, opened by a new visitor (who becomes a guest), connected live."""
    page = context.new_page()
    open_board(page)
    return page


def open_board(page: Page) -> None:
    page.goto("/")
    page.locator("#status[data-state=live]").wait_for()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
