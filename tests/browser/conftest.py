"""Browser tests: Playwright (PyPI) driving Debian's Chromium headless (``/usr/bin/chromium``; `make test` installs
it). Playwright's own browser download is never used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser._browser import Exporter, launch_browser
from tests.integration.servers import RedisServer


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: sync Playwright keeps an event loop running in this thread while it is open, and the
    # asyncio tests of other modules could not start theirs.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context (no cookies, cold cache) whose page records script errors: a test fails on any."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.script_errors = errors
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"


@pytest.fixture
def exporter(redis_srv: RedisServer) -> Iterator[Exporter]:
    """``taskiq-monitor serve`` on the test's Redis (no token)."""
    server = Exporter(redis_srv.url)
    try:
        yield server
    finally:
        server.stop()
