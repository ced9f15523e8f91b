"""The dashboard's live connection (static/js/live.js) and start-up (static/js/main.js) recovering on their own: an
exporter restart under a quiet feed, a Redis that came back empty, settings that failed to load, and the browser
coming back online; the focus after logging in."""

from __future__ import annotations

from typing import Any

from tests.browser._browser import Exporter, emit_all, event, feed_rows
from tests.integration.servers import RedisServer, wait_for

STATUS = '[data-testid="live-status"]'
TOKEN = "s3cret-token-for-the-focus-test"


def feed_ids(page: Any) -> list[str]:
    return [r["task_id"] for r in feed_rows(page)]


def test_events_written_while_the_exporter_restarts_reach_a_feed_that_had_shown_none(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    # Workers write to Redis whether or not an exporter runs. A page that had received no event yet (a quiet feed)
    # had no id of its own to resume after: it reconnected "from now" and never showed what was written meanwhile.
    page.goto(exporter.url + "/#/feed")
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    page.wait_for_selector('#feed-empty:has-text("Waiting for events")')
    exporter.kill()
    page.wait_for_selector(f"{STATUS}:text-matches('reconnecting|offline')")
    emit_all(redis_srv.url, [event(f"q{i}", "success", "quiet_task") for i in range(3)])
    exporter.start()
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    emit_all(redis_srv.url, [event("q99", "success", "quiet_task")])
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="q99"]')
    assert feed_ids(page) == ["q99", "q2", "q1", "q0"]


def test_after_redis_came_back_empty_the_feed_warns_and_continues_with_new_events(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    # A Redis restarted without persistence holds no stream: the id the page resumes after is "from the future"
    # there (error frame future_id, close 4400). That is the stream's reset, not a reason to stop.
    emit_all(redis_srv.url, [event("before", "success", "reset_task")])
    page.goto(exporter.url + "/#/feed")
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="before"]')
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    redis_srv.stop()
    page.wait_for_selector(f"{STATUS}:text-matches('reconnecting|offline')")
    redis_srv.start()
    gap = page.wait_for_selector('[data-testid="feed-gap"]')
    assert "reset" in gap.inner_text() and "may be missing" in gap.inner_text()
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    emit_all(redis_srv.url, [event("after", "success", "reset_task")])
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="after"]')
    assert feed_ids(page) == ["after", "before"]
    assert page.locator('[data-notice="live"].error').count() == 0


def test_settings_that_failed_to_load_are_retried_until_the_page_starts(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    # A reverse proxy answers 502 while the exporter restarts, or the network drops: the page asked to be reloaded by
    # hand and stayed empty after the exporter was back.
    emit_all(redis_srv.url, [event("t1", "success", "config_task")])
    failures = {"left": 3}
    answered: list[int] = []

    def config(route: Any) -> None:
        if failures["left"] == 3:
            failures["left"] -= 1
            answered.append(0)
            route.abort("connectionrefused")
        elif failures["left"]:
            failures["left"] -= 1
            answered.append(502)
            route.fulfill(status=502, content_type="text/html", body="<h1>502 Bad Gateway</h1>")
        else:
            answered.append(200)
            route.continue_()

    page.route("**/api/v1/ui/config", config)
    page.goto(exporter.url + "/")
    page.wait_for_selector('[data-notice="config"]:has-text("Retrying")')
    page.wait_for_selector('[data-testid="task-card"][data-task-name="config_task"]')
    page.wait_for_selector('[data-notice="config"]', state="detached")
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    assert answered == [0, 502, 502, 200]


def test_a_client_error_loading_the_settings_is_not_retried(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    # A 404 (an address that is not the exporter's) will not change by itself: the page says so once.
    answered: list[int] = []

    def config(route: Any) -> None:
        answered.append(404)
        route.fulfill(status=404, content_type="application/json", body='{"detail": "Not Found"}')

    page.route("**/api/v1/ui/config", config)
    page.goto(exporter.url + "/")
    notice = page.wait_for_selector('[data-notice="config"]')
    assert "Reload the page" in notice.inner_text() and "Retrying" not in notice.inner_text()
    page.wait_for_timeout(2000)  # longer than the first retry delays: none was made
    assert answered == [404]


def test_the_feed_reconnects_as_soon_as_the_browser_is_back_online(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    # The page's timers are stopped (Playwright's clock) once the connection is lost: only the browser's "online"
    # event can bring it back. Before, the page waited for its retry timer (up to 10 s after a long drop).
    page.clock.install()
    page.goto(exporter.url + "/#/feed")
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    page.context.set_offline(True)
    exporter.kill()
    page.wait_for_selector(f"{STATUS}:text-matches('reconnecting|offline')")
    page.clock.pause_at(page.evaluate("() => Date.now()") + 1)
    exporter.start()
    emit_all(redis_srv.url, [event("back", "success", "online_task")])
    page.context.set_offline(False)
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    page.clock.resume()  # the feed draws its rows on a timer
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="back"]')


def test_after_logging_in_by_keyboard_the_focus_is_on_the_content(redis_srv: RedisServer, page: Any) -> None:
    # The form (and the focused input) is hidden once logged in: the focus fell back to the top of the document, and a
    # keyboard or screen-reader user started again from the skip link.
    emit_all(redis_srv.url, [event("t1", "success", "focus_task")])
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_BEARER_TOKEN=TOKEN)
    try:
        page.goto(server.url + "/#/feed")
        page.wait_for_selector("#view-login:not([hidden])")
        page.keyboard.type(TOKEN)  # the token field has the focus
        page.keyboard.press("Enter")
        page.wait_for_selector('[data-testid="feed-row"][data-task-id="t1"]')
        wait_for(lambda: page.evaluate("() => document.activeElement.id") == "main", 30, "the focus on the content")
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == "feed-task"  # the view's first control
    finally:
        server.stop()
