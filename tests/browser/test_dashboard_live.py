"""The dashboard's live connection (static/js/live.js) and start-up (static/js/main.js) recovering on their own: an
exporter restart under a quiet feed, and a Redis that came back empty."""

from __future__ import annotations

from typing import Any

from tests.browser._browser import Exporter, emit_all, event, feed_rows
from tests.integration.servers import RedisServer

STATUS = '[data-testid="live-status"]'


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
