"""Regenerate the dashboard screenshots under docs/screenshots/ (`make screenshots`).

Starts the in-memory demo (`taskiq-monitor demo`, 15 task types) on a free loopback port, lets it run for a while,
and photographs each view with Debian's Chromium (Playwright from PyPI; never `playwright install`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser._browser import launch_browser  # noqa: E402
from tests.integration.servers import PYTHONPATH, free_port, http_get, stop, wait_for  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
WARMUP_SECONDS = 45


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_MONITOR_")}
    env.update(PYTHONPATH=PYTHONPATH, TASKIQ_MONITOR_GRAFANA_URL="http://localhost:3000")
    demo = subprocess.Popen(
        [sys.executable, "-m", "taskiq_monitor.cli", "demo", "--port", str(port), "--seed", "7", "--rate", "25"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(base + "/healthz"), 30, "the demo")
        print(f"==> demo on {base}; letting it run {WARMUP_SECONDS} s", flush=True)
        time.sleep(WARMUP_SECONDS)
        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            shoot(browser, base)
            browser.close()
    finally:
        stop(demo, signal.SIGINT)
    return 0


def shoot(browser: object, base: str) -> None:
    def page(width: int, height: int, scheme: str = "light") -> object:
        p = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme)  # type: ignore[attr-defined]
        p.set_default_timeout(30_000)
        return p

    p = page(1400, 1000)
    p.goto(base + "/")
    p.wait_for_selector('[data-testid="task-card"]')
    p.wait_for_timeout(1500)
    save(p, "overview.png", full_page=True)
    p.goto(base + "/#/feed")
    p.wait_for_selector('[data-testid="feed-row"]')
    p.wait_for_timeout(2000)
    save(p, "feed.png")
    p.goto(base + "/#/history?status=failed")
    p.wait_for_selector('[data-testid="history-row"]')
    save(p, "history.png")
    p.locator('[data-testid="history-row"] a').first.click()
    p.wait_for_selector('[data-testid="error-detail"] [data-field="traceback"]:not(:empty)')
    save(p, "error-detail.png", full_page=True)
    p.close()
    dark = page(1400, 1000, "dark")
    dark.goto(base + "/")
    dark.wait_for_selector('[data-testid="task-card"]')
    dark.wait_for_timeout(1500)
    save(dark, "overview-dark.png")
    dark.close()
    phone = page(390, 844)
    phone.goto(base + "/")
    phone.wait_for_selector('[data-testid="task-card"]')
    phone.wait_for_timeout(1500)
    save(phone, "overview-phone.png")
    phone.close()


def save(page: object, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(OUT / name), full_page=full_page)  # type: ignore[attr-defined]
    print(f"==> docs/screenshots/{name}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
