"""The dashboard against `taskiq-monitor serve` on a Redis fed by a real StateSink: the live feed across an exporter
restart and while paused, the feed's filter, history filters and paging, the error detail at a phone width, and the
bearer token."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.parse
from typing import Any

import pytest

from taskiq_monitor.events import bounded_task_id
from tests.browser._browser import Exporter, api_get, emit_all, event, feed_rows, sink
from tests.integration.servers import RedisServer, wait_for

TOKEN = "s3cret-token-for-the-browser-test"


def test_killing_and_restarting_the_exporter_under_a_stream_leaves_every_event_once_in_the_feed(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event("warmup", "success", "stream_task")])
    page.goto(exporter.url + "/#/feed")
    status = page.locator('[data-testid="live-status"]')
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="warmup"]')
    state = sink(redis_srv.url)
    sent: list[str] = []
    stopping = threading.Event()

    def stream() -> None:  # a continuous stream, ~100 events/s, throughout the outage
        i = 0
        while not stopping.is_set() and i < 450:
            task_id = f"s{i:04d}"
            state.emit(event(task_id, "success", "stream_task"))
            sent.append(task_id)
            i += 1
            time.sleep(0.01)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        wait_for(lambda: len(sent) >= 80, 30, "the stream started")
        exporter.kill()
        wait_for(lambda: status.inner_text() in ("reconnecting", "offline"), 30, "the page noticed the outage")
        wait_for(lambda: len(sent) >= 200, 30, "events sent while the exporter is down")
        exporter.start()
        wait_for(lambda: status.inner_text() == "live", 60, "the page reconnected")
    finally:
        producer.join(60)
        stopping.set()
    wait_for(lambda: state.written == len(sent), 30, "every event written")
    state.stop()
    wait_for(
        lambda: sorted(r["task_id"] for r in feed_rows(page) if r["task_id"] != "warmup") == sent,
        60,
        "the feed holds every streamed event",
    )
    rows = [r for r in feed_rows(page) if r["task_id"] != "warmup"]
    assert len(rows) == len(sent) == 450  # exactly once: no duplicate row
    assert [r["task_id"] for r in reversed(rows)] == sent  # in order, newest on top
    assert page.locator('[data-testid="feed-gap"]').count() == 0


def test_a_paused_feed_stays_as_it_was_through_filters_and_other_views_and_resumes_with_everything(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event("warmup", "success", "pause_task")])
    page.goto(exporter.url + "/#/feed")
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="warmup"]')
    state = sink(redis_srv.url)
    sent: list[str] = []

    def stream() -> None:  # ~100 events/s; one in three failed
        for i in range(300):
            task_id = f"p{i:03d}"
            state.emit(event(task_id, "failed" if i % 3 == 0 else "success", "pause_task"))
            sent.append(task_id)
            time.sleep(0.01)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        wait_for(lambda: len(feed_rows(page)) >= 40, 30, "the stream is shown")
        page.click("#feed-pause")
        frozen = feed_rows(page)
        frozen_ids = [r["task_id"] for r in frozen]
        note = page.locator("#feed-paused-note")
        wait_for(lambda: (m := re.search(r"(\d+) new events", note.inner_text())) and int(m[1]) >= 60, 30, "paused")
        # Nothing moved after the click (before: the batch waiting for its next frame was drawn after it).
        assert [r["task_id"] for r in feed_rows(page)] == frozen_ids
        # Before: a filter or another view drew the buffer as it is now, newer events included, under the note
        # "Paused".
        page.select_option("#feed-status", "failed")
        failed = [r["task_id"] for r in frozen if r["status"] == "failed"]
        assert failed and [r["task_id"] for r in feed_rows(page)] == failed
        page.click('a[data-nav="overview"]')
        page.wait_for_selector('[data-testid="task-card"]')
        page.click('a[data-nav="feed"]')
        page.wait_for_selector("#view-feed:not([hidden])")
        assert [r["task_id"] for r in feed_rows(page)] == failed
        page.select_option("#feed-status", "")
        assert [r["task_id"] for r in feed_rows(page)] == frozen_ids
        assert page.get_attribute("#feed-pause", "aria-pressed") == "true"
    finally:
        producer.join(60)
    wait_for(lambda: state.written == len(sent) == 300, 30, "every event written")
    state.stop()
    since = 300 - sum(1 for r in frozen if r["task_id"] != "warmup")  # counted in the other view too
    wait_for(lambda: note.inner_text() == f"Paused — {since} new events since.", 30, f"{since} new events")
    assert [r["task_id"] for r in feed_rows(page)] == frozen_ids
    page.click("#feed-pause")
    assert note.is_hidden()
    assert [r["task_id"] for r in feed_rows(page)] == [*reversed(sent), "warmup"]  # every event once, newest first


def test_the_feed_filter_offers_every_registered_type_and_one_first_seen_in_the_feed(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    # "idle_task" has no event among the 50 the feed starts with: only the registry knows it.
    emit_all(redis_srv.url, [event("idle", "success", "idle_task")])
    emit_all(redis_srv.url, [event(f"b{i:02d}", "success", "busy_task") for i in range(60)])
    page.goto(exporter.url + "/#/feed")
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="b59"]')
    options = "() => [...document.querySelectorAll('#feed-task option')].map(o => o.value)"
    wait_for(lambda: page.evaluate(options) == ["", "busy_task", "idle_task"], 30, "the registered types")
    # A type first seen while the page shows the feed. Before: the list was loaded once, and refreshed only by a
    # visit to the overview, so it could not be chosen.
    emit_all(redis_srv.url, [event("late", "failed", "late_task")])
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="late"]')
    assert page.evaluate(options) == ["", "busy_task", "idle_task", "late_task"]
    page.select_option("#feed-task", "late_task")
    assert [r["task_id"] for r in feed_rows(page)] == ["late"]


def test_history_filters_live_in_the_url_and_the_51st_match_is_on_page_2(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    events = []
    for i in range(60):
        events.append(event(f"a-fail-{i:02d}", "failed", "report_task", error_type="ValueError", error_message="x"))
        if i % 3 == 0:
            events.append(event(f"a-ok-{i:02d}", "success", "report_task"))
            events.append(event(f"b-fail-{i:02d}", "failed", "other_task"))
    emit_all(redis_srv.url, events)
    page.goto(exporter.url + "/#/history")
    page.wait_for_selector('[data-testid="history-row"]')
    page.select_option("#history-task", "report_task")
    page.select_option("#history-status", "failed")
    page.click('#history-form button[type="submit"]')
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"history-row\"]')].every(r => "
        "r.dataset.taskName === 'report_task' && r.dataset.status === 'failed')"
        " && document.querySelectorAll('[data-testid=\"history-row\"]').length === 50"
    )
    query = urllib.parse.parse_qs(page.url.split("#/history?", 1)[1])
    assert query["task_name"] == ["report_task"] and query["status"] == ["failed"]
    first = page.eval_on_selector_all('[data-testid="history-row"]', "rs => rs.map(r => r.dataset.taskId)")
    assert first == [f"a-fail-{i:02d}" for i in reversed(range(10, 60))]
    page.click("#history-older")
    page.wait_for_function("() => document.querySelector('#history-page').textContent === 'Page 2'")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"history-row\"]').length === 10")
    second = page.eval_on_selector_all('[data-testid="history-row"]', "rs => rs.map(r => r.dataset.taskId)")
    assert second[0] == "a-fail-09"  # the 51st match, newest first
    assert second == [f"a-fail-{i:02d}" for i in reversed(range(10))]
    assert page.is_disabled("#history-older")
    # The URL is shareable: opened in a fresh page, it shows the same filtered page.
    shared = page.url
    other = page.context.new_page()
    other.goto(shared)
    other.wait_for_function("() => document.querySelectorAll('[data-testid=\"history-row\"]').length === 10")
    assert other.eval_on_selector_all('[data-testid="history-row"]', "rs => rs.map(r => r.dataset.taskId)") == second
    assert other.locator("#history-task").input_value() == "report_task"
    page.click("#history-newer")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"history-row\"]').length === 50")
    # A date range: nothing is recorded after 2100; everything before it.
    page.fill('input[name="since"]', "2100-01-01T00:00:00")
    page.click('#history-form button[type="submit"]')
    page.wait_for_selector('#history-empty:has-text("No execution matches these filters")')
    assert "since=" in page.url and "status=failed" in page.url
    assert page.locator('[data-testid="history-row"]').count() == 0
    page.fill('input[name="since"]', "")
    page.fill('input[name="until"]', "2100-01-01T00:00:00")
    page.click('#history-form button[type="submit"]')
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"history-row\"]').length === 50")


def test_the_skip_link_focuses_the_content_and_keeps_the_view_and_its_filters(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event("skip-1", "failed", "report_task", error_type="ValueError", error_message="x")])
    page.goto(exporter.url + "/#/history?status=failed")
    page.wait_for_selector('[data-testid="history-row"]')
    before = page.url
    page.keyboard.press("Tab")  # the skip link is the first stop
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'main'")
    assert page.url == before and page.title().startswith("History")
    assert page.is_visible('[data-testid="history-row"]')


def test_the_error_detail_fits_a_phone_width_and_its_attempts_table_takes_focus(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    task_id = "f" * 32
    emit_all(redis_srv.url, [event(task_id, "failed", "score_message_task", error_type="KeyError", error_message="k")])
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(exporter.url + f"/#/task/{task_id}")
    page.wait_for_selector('[data-testid="error-detail"]')
    page.wait_for_function("() => document.querySelector('#detail-title').textContent.includes('score_message_task')")
    # No sideways scrolling at a phone width, whatever the length of the task id in the title.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # A region that scrolls must be reachable by keyboard (WCAG 2.1.1; axe-core's scrollable-region-focusable).
    assert page.get_attribute("#detail-attempts-title + .table-wrap", "tabindex") == "0"


def test_a_message_as_long_as_a_field_may_be_keeps_the_traceback_in_reach_at_a_phone_width(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    message = "row 12 violates constraint " + "x" * 15_000  # about event_max_field_bytes (16 KB)
    trace = 'Traceback (most recent call last):\n  File "/app/jobs.py", line 3, in run\nValueError: row 12'
    emit_all(
        redis_srv.url,
        [event("long-msg", "failed", "import_task", error_type="ValueError", error_message=message, traceback=trace)],
    )
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(exporter.url + "/#/task/long-msg")
    page.wait_for_selector('#detail-status:has-text("1 attempt; last: failed")')
    assert page.inner_text('[data-field="error_message"]') == message  # all of it, in a box that scrolls
    top = "(s) => document.querySelector(s).getBoundingClientRect().top + window.scrollY"
    # Before: the message, then again its attempt row, made the page 100,000 px tall; the traceback came after it.
    assert page.evaluate(top, '[data-field="traceback"]') < 2 * 844
    assert page.evaluate(top, "#detail-attempts") < 4 * 844
    assert page.evaluate("document.documentElement.scrollHeight") < 5 * 844
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The boxes that scroll take keyboard focus (WCAG 2.1.1): the message, and its cell in the attempts table.
    assert page.get_attribute("#detail-error-head", "tabindex") == "0"
    assert page.get_attribute('[data-testid="attempt-row"] .clip', "tabindex") == "0"
    assert page.inner_text('[data-testid="attempt-row"] .clip') == f"ValueError: {message}"


def test_a_token_protected_exporter_refuses_the_page_until_login_and_works_after(
    redis_srv: RedisServer, page: Any
) -> None:
    emit_all(redis_srv.url, [event("t1", "success", "guarded_task")])
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_BEARER_TOKEN=TOKEN)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            api_get(server.url + "/api/v1/tasks")
        assert refused.value.code == 401
        page.goto(server.url + "/")
        page.wait_for_selector("#view-login:not([hidden])")
        assert page.locator('[data-testid="task-card"]').count() == 0
        assert page.evaluate("() => fetch('api/v1/tasks').then(r => r.status)") == 401
        page.fill("#login-token", "wrong")
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector('#login-error:has-text("Wrong token")')
        assert page.locator('[data-testid="task-card"]').count() == 0
        page.fill("#login-token", TOKEN)
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector('[data-testid="task-card"][data-task-name="guarded_task"]')
        page.wait_for_selector('[data-testid="live-status"]:has-text("live")')  # the WebSocket took the cookie
        emit_all(redis_srv.url, [event("t2", "failed", "guarded_task")])
        page.click('a[data-nav="feed"]')
        page.wait_for_selector('[data-testid="feed-row"][data-task-id="t2"]')
        cookies = page.context.cookies()
        session = [c for c in cookies if c["name"] == "taskiq_monitor_session"]
        assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        assert TOKEN not in session[0]["value"]
        assert page.evaluate("() => document.cookie") == ""  # HttpOnly: not readable by scripts
        assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
        assert TOKEN not in page.url
        page.click("#logout")
        page.wait_for_selector("#view-login:not([hidden])")
        assert page.evaluate("() => fetch('api/v1/tasks').then(r => r.status)") == 401
    finally:
        server.stop()


def test_an_empty_store_no_workers_and_redis_down_get_clear_messages(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    page.goto(exporter.url + "/")
    page.wait_for_selector('#cards-empty:has-text("No task type is registered yet")')
    page.wait_for_selector('[data-notice="workers"]:has-text("No worker is alive")')
    redis_srv.stop()
    page.wait_for_selector('[data-notice="state"]:has-text("(Redis) is unreachable")')
    redis_srv.start()
    emit_all(redis_srv.url, [event("back", "success", "after_outage_task")])
    page.wait_for_selector('[data-testid="task-card"][data-task-name="after_outage_task"]')
    page.wait_for_selector('[data-notice="state"]', state="detached")
    assert page.locator("#cards-empty").is_hidden()


def test_the_error_detail_links_to_grafana_when_its_address_is_set(redis_srv: RedisServer, page: Any) -> None:
    emit_all(
        redis_srv.url,
        [
            event("g1", "failed", "linked_task", error_type="KeyError", error_message="'k'", trace_id="ab" * 16),
            event("g2", "failed", "linked_task", error_type="KeyError", error_message="'k'"),
        ],
    )
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_GRAFANA_URL="http://grafana.example:3000/")
    try:
        page.goto(server.url + "/#/task/g1?task_name=linked_task")
        loki = page.locator('[data-testid="error-detail"] a[data-link="loki"]')
        loki.wait_for()
        href = urllib.parse.unquote(loki.get_attribute("href"))
        assert href.startswith("http://grafana.example:3000/explore?")
        assert '| task_id=\\"g1\\"' in href and '"datasource":"loki"' in href
        trace = urllib.parse.unquote(page.locator('a[data-link="trace"]').get_attribute("href"))
        assert "ab" * 16 in trace and '"datasource":"tempo"' in trace
        page.goto(server.url + "/#/task/g2?task_name=linked_task")
        page.wait_for_selector('#detail-title:has-text("g2")')
        page.locator('a[data-link="loki"]').wait_for()
        assert page.locator('a[data-link="trace"]').count() == 0  # no trace id recorded
    finally:
        server.stop()


def test_a_task_opened_by_its_whole_long_id_links_and_updates_by_the_id_the_store_holds(
    redis_srv: RedisServer, page: Any
) -> None:
    # An application's own id over 512 characters is recorded bounded (events.bounded_task_id). Opened by the whole
    # id (a link from the application), the page's Loki query and its live updates used the whole id, and matched
    # nothing.
    long_id = "import:" + "tenant-42/" * 100
    recorded = bounded_task_id(long_id)
    emit_all(redis_srv.url, [event(long_id, "failed", "long_id_task", error_type="KeyError", error_message="'k'")])
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_GRAFANA_URL="http://grafana.example:3000/")
    try:
        page.goto(server.url + "/#/task/" + urllib.parse.quote(long_id, safe="") + "?task_name=long_id_task")
        loki = page.locator('[data-testid="error-detail"] a[data-link="loki"]')
        loki.wait_for()
        href = urllib.parse.unquote(loki.get_attribute("href"))
        assert f'| task_id=\\"{recorded}\\"' in href
        assert page.locator('[data-testid="attempt-row"]').count() == 1
        # Its attempt failed: the page polls no more, and only a live event of this task reloads it.
        emit_all(redis_srv.url, [event(long_id, "success", "long_id_task", attempt=2)])
        page.wait_for_selector('[data-testid="attempt-row"][data-attempt="2"]', timeout=30_000)
    finally:
        server.stop()


def test_with_live_compression_the_browser_negotiates_deflate_and_the_feed_holds_every_event(
    redis_srv: RedisServer, page: Any
) -> None:
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_LIVE_COMPRESSION="true")
    try:
        handshakes: list[dict[str, Any]] = []
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.webSocketHandshakeResponseReceived", lambda e: handshakes.append(e["response"]["headers"]))
        emit_all(redis_srv.url, [event("warmup", "success", "deflate_task")])
        page.goto(server.url + "/#/feed")
        page.wait_for_selector('[data-testid="feed-row"][data-task-id="warmup"]')
        sent = [f"z{i:04d}" for i in range(300)]
        emit_all(redis_srv.url, [event(task_id, "success", "deflate_task", kwargs={"n": task_id}) for task_id in sent])
        wait_for(
            lambda: sorted(r["task_id"] for r in feed_rows(page) if r["task_id"] != "warmup") == sent,
            60,
            "the feed holds every event",
        )
        rows = [r["task_id"] for r in feed_rows(page) if r["task_id"] != "warmup"]
        assert list(reversed(rows)) == sent  # in order, once
        extensions = [
            value
            for headers in handshakes
            for name, value in headers.items()
            if name.lower() == "sec-websocket-extensions"
        ]
        assert extensions and "permessage-deflate" in extensions[0] and "server_no_context_takeover" in extensions[0]
    finally:
        server.stop()


def test_an_overview_answer_that_arrives_after_logout_is_not_drawn(redis_srv: RedisServer, page: Any) -> None:
    """Logging out while the overview's poll is out: its answer must not be drawn without the configuration (the
    page fixture fails the test on any script error)."""
    emit_all(redis_srv.url, [event("t1", "success", "guarded_task")])
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_BEARER_TOKEN=TOKEN)
    try:
        page.goto(server.url + "/")
        page.fill("#login-token", TOKEN)
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector('[data-testid="task-card"][data-task-name="guarded_task"]')
        answer = page.evaluate("() => fetch('api/v1/tasks').then(r => r.text())")
        held: list[Any] = []
        page.route("**/api/v1/tasks", lambda route: held.append(route))  # the next poll stays out until released
        deadline = time.monotonic() + 60
        while not held:
            assert time.monotonic() < deadline, "the overview polls every 2 s"
            page.wait_for_timeout(100)
        page.click("#logout")
        page.wait_for_selector("#view-login:not([hidden])")
        held[0].fulfill(status=200, content_type="application/json", body=answer)
        page.wait_for_timeout(500)  # the answer's handlers have run
        assert page.locator("#view-login").is_visible()
    finally:
        server.stop()
