"""The dashboard's navigation against `taskiq-monitor serve` on a Redis fed by a real StateSink: history pages that
follow Back, Forward and a reload, by keyboard, and a second "Older" while a page loads; the task page's "Back", a
reversed date range, a long task name, a task page that follows a running and retrying task, a task page opened while
the previous one is still loading or by an address with a stray "%", and the login form after the token changed."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from tests.browser._browser import Exporter, emit_all, event
from tests.integration.servers import RedisServer, wait_for

ROWS_JS = "() => [...document.querySelectorAll('[data-testid=\"history-row\"]')].map(r => r.dataset.taskId)"


def history_ids(page: Any) -> list[str]:
    return list(page.evaluate(ROWS_JS))


def wait_page(page: Any, number: int, ids: list[str]) -> None:
    """The pager says Page ``number`` and the rows are ``ids``: what the user sees agrees."""
    wait_for(
        lambda: page.inner_text("#history-page") == f"Page {number}" and history_ids(page) == ids,
        30,
        f"page {number} ({ids[0]}…{ids[-1]})",
    )


def test_history_pages_follow_back_forward_and_reload_and_newer_goes_to_the_page_before(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event(f"p{i:03d}", "success", "paged_task") for i in range(120)])
    emit_all(redis_srv.url, [event("other", "failed", "paged_task"), event("else", "success", "another_task")])
    pages = {
        1: [f"p{i:03d}" for i in reversed(range(70, 120))],
        2: [f"p{i:03d}" for i in reversed(range(20, 70))],
        3: [f"p{i:03d}" for i in reversed(range(20))],
    }
    page.goto(exporter.url + "/#/history?task_name=paged_task&status=success")
    wait_page(page, 1, pages[1])
    assert page.is_disabled("#history-newer")
    page.click("#history-older")
    wait_page(page, 2, pages[2])
    page.click("#history-older")
    wait_page(page, 3, pages[3])
    assert page.is_disabled("#history-older")

    page.go_back()
    wait_page(page, 2, pages[2])
    page.click("#history-newer")
    wait_page(page, 1, pages[1])
    page.go_back()
    wait_page(page, 2, pages[2])
    page.go_forward()
    wait_page(page, 1, pages[1])

    page.click("#history-older")
    wait_page(page, 2, pages[2])
    page.click("#history-older")
    wait_page(page, 3, pages[3])
    page.reload()
    wait_page(page, 3, pages[3])
    page.click("#history-newer")
    wait_page(page, 2, pages[2])
    page.click("#history-newer")
    wait_page(page, 1, pages[1])
    # The filters held on every page.
    query = urllib.parse.parse_qs(page.url.split("#/history?", 1)[1])
    assert query == {"task_name": ["paged_task"], "status": ["success"]}

    # Page 3's address, opened in a fresh page, shows page 3, and "Newer" leads to page 2.
    page.click("#history-older")
    wait_page(page, 2, pages[2])
    page.click("#history-older")
    wait_page(page, 3, pages[3])
    other = page.context.new_page()
    other.goto(page.url)
    wait_page(other, 3, pages[3])
    other.click("#history-newer")
    wait_page(other, 2, pages[2])


def test_back_from_a_task_page_returns_to_the_filtered_history_it_was_opened_from(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(
        redis_srv.url,
        [event(f"b{i:02d}", "failed", "back_task", error_type="ValueError", error_message="x") for i in range(60)]
        + [event("ok", "success", "back_task"), event("elsewhere", "failed", "some_other_task")],
    )
    page.goto(exporter.url + "/#/history?task_name=back_task&status=failed")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"history-row\"]').length === 50")
    page.click("#history-older")
    page.wait_for_function("() => document.querySelector('#history-page').textContent === 'Page 2'")
    page.wait_for_selector('[data-testid="history-row"][data-task-id="b09"]')
    before = page.url
    page.click('[data-testid="history-row"][data-task-id="b05"] a')
    page.wait_for_selector('#detail-title:has-text("b05")')
    back = page.locator("#detail-back")
    assert back.inner_text() == "← Back to history"
    back.click()
    page.wait_for_selector("#view-history:not([hidden])")
    assert page.url == before
    wait_for(lambda: history_ids(page) == [f"b{i:02d}" for i in reversed(range(10))], 30, "page 2 again")
    assert page.inner_text("#history-page") == "Page 2"
    assert page.locator("#history-task").input_value() == "back_task"
    assert page.locator("#history-status").input_value() == "failed"

    # Opened from the live feed, "Back" returns there; opened directly, to its task type's history.
    page.goto(exporter.url + "/#/feed")
    page.locator('[data-testid="feed-row"][data-task-id="elsewhere"] a').click()
    page.wait_for_selector('#detail-title:has-text("elsewhere")')
    assert back.inner_text() == "← Back to live feed"
    back.click()
    page.wait_for_selector("#view-feed:not([hidden])")
    fresh = page.context.new_page()
    fresh.goto(exporter.url + "/#/task/b05?task_name=back_task")
    fresh.wait_for_selector('#detail-title:has-text("b05")')
    fresh.click("#detail-back")
    fresh.wait_for_selector('[data-testid="history-row"][data-task-id="b59"]')
    assert fresh.url.endswith("#/history?task_name=back_task")


def test_a_reversed_date_range_is_refused_in_the_page_in_local_time(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event("r1", "success", "range_task")])
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/executions" in r.url else None)
    page.goto(exporter.url + "/#/history?task_name=range_task")
    page.wait_for_selector('[data-testid="history-row"][data-task-id="r1"]')
    before = page.url
    page.fill('input[name="since"]', "2030-05-02T10:00:00")
    page.fill('input[name="until"]', "2030-05-01T09:30:00")
    page.click('#history-form button[type="submit"]')
    error = page.locator("#history-form-error")
    error.wait_for()
    # Said as the inputs show it (local time), not as the server's UTC.
    assert error.inner_text() == (
        '"From" (2030-05-02 10:00:00) is after "To" (2030-05-01 09:30:00): nothing can match. Swap them or clear one.'
    )
    assert page.url == before  # nothing was applied…
    assert not any("since=" in url for url in asked)  # …nor sent to the server
    assert page.is_visible('[data-testid="history-row"][data-task-id="r1"]')
    # Corrected, the range applies and the message goes.
    page.fill('input[name="since"]', "2000-01-01T00:00:00")
    page.click('#history-form button[type="submit"]')
    error.wait_for(state="hidden")
    page.wait_for_selector('[data-testid="history-row"][data-task-id="r1"]')
    assert "since=" in page.url
    # A reversed range in an address (typed, or shared) gets the same message and no request.
    asked.clear()
    page.goto(exporter.url + "/#/history?since=2030-05-02T10%3A00%3A00.000Z&until=2030-05-01T10%3A00%3A00.000Z")
    error.wait_for()
    assert "is after" in error.inner_text()
    page.wait_for_selector('#history-empty:has-text("ends before it starts")')
    assert not any("since=" in url for url in asked)


def test_a_long_task_name_keeps_the_filters_within_the_window(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    name = "module.submodule." + "very_long_task_name_" * 11 + "end"
    assert len(name) > 230
    emit_all(redis_srv.url, [event("long1", "success", name), event("short1", "success", "short_task")])
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    for view, select in (("history", "#history-task"), ("feed", "#feed-task")):
        page.goto(exporter.url + f"/#/{view}")
        page.wait_for_function(
            f"() => [...document.querySelector('{select}').options].some(o => o.value.endsWith('_end'))"
        )
        page.select_option(select, name)
        if view == "history":
            page.click('#history-form button[type="submit"]')
            page.wait_for_selector('[data-testid="history-row"][data-task-id="long1"]')
        else:
            page.wait_for_selector('[data-testid="feed-row"][data-task-id="long1"]')
        assert page.evaluate(fits), f"{view}: the page scrolls sideways"
        box = page.locator(select).bounding_box()
        assert box["x"] + box["width"] <= 1400 and box["width"] <= 400, (view, box)
        assert page.get_attribute(select, "title") == name  # the full name, where the select shows it cut
        assert page.eval_on_selector(select, "s => getComputedStyle(s).textOverflow") == "ellipsis"
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate(fits), "phone width: the page scrolls sideways"


def test_the_task_page_follows_a_running_then_retried_task_to_its_outcome(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    task = "follow_task"
    started = time.time()

    def attempt(n: int, status: str, **kw: Any) -> Any:
        return event("fol1", status, task, attempt=n, started_at=started + n, args=[n], **kw)

    emit_all(redis_srv.url, [attempt(1, "running")])
    loads: list[str] = []
    page.on("request", lambda r: loads.append(r.url) if "/api/v1/executions/fol1" in r.url else None)
    page.goto(exporter.url + f"/#/task/fol1?task_name={task}")
    detail = page.locator('[data-testid="error-detail"]')
    page.wait_for_selector('#detail-status:has-text("1 attempt; last: running")')

    emit_all(redis_srv.url, [attempt(1, "retried", error_type="ValueError", error_message="first")])
    emit_all(redis_srv.url, [attempt(2, "running")])
    page.wait_for_selector('[data-testid="attempt-row"][data-attempt="2"][data-status="running"]')
    assert detail.locator('[data-testid="attempt-row"][data-attempt="1"]').get_attribute("data-status") == "retried"
    emit_all(redis_srv.url, [attempt(2, "retried", error_type="KeyError", error_message="second")])
    emit_all(redis_srv.url, [attempt(3, "running")])
    emit_all(redis_srv.url, [attempt(3, "success", duration_seconds=0.25)])
    page.wait_for_selector('#detail-status:has-text("3 attempts; last: success")')
    assert detail.get_attribute("data-status") == "success"
    assert "updated live" not in page.inner_text("#detail-status")
    statuses = page.eval_on_selector_all('[data-testid="attempt-row"]', "rs => rs.map(r => r.dataset.status)")
    assert statuses == ["retried", "retried", "success"]
    # Each section says which attempt it describes: the error is attempt 2's, the rest the last attempt's.
    assert page.inner_text('[data-field="error_type"]') == "KeyError"
    assert page.inner_text("#detail-error-attempt") == "(attempt 2 of 3)"
    assert page.inner_text("#detail-timings-attempt") == "(attempt 3, the last of 3)"
    assert page.inner_text("#detail-params-attempt") == "(attempt 3, the last of 3)"
    assert '"args": [\n    3\n  ]' in page.inner_text('[data-field="params"]')
    assert "250 ms" in page.inner_text("#detail-timings")

    # Finished: no more loads. (A negative check needs a span of time: 3 poll intervals.)
    settled = len(loads)
    page.wait_for_timeout(6000)
    assert len(loads) == settled, loads[settled:]

    # A running task is loaded again while it is shown, and no longer once the user has left.
    emit_all(redis_srv.url, [event("fol2", "running", task)])
    loads.clear()
    page.on("request", lambda r: loads.append(r.url) if "/api/v1/executions/fol2" in r.url else None)
    page.goto(exporter.url + f"/#/task/fol2?task_name={task}")
    page.wait_for_selector('#detail-status:has-text("last: running — updated live")')
    # (a call into the page lets Playwright deliver the request events recorded meanwhile)
    wait_for(lambda: page.evaluate("true") and len(loads) >= 3, 30, "the running task is polled")
    page.click('a[data-nav="feed"]')
    page.wait_for_selector("#view-feed:not([hidden])")
    left = len(loads)
    page.wait_for_timeout(6000)
    assert len(loads) <= left + 1, loads  # at most the request that was already out


def test_after_the_token_changed_the_login_form_says_the_session_ended_without_stale_notices(
    redis_srv: RedisServer, page: Any
) -> None:
    emit_all(redis_srv.url, [event("t1", "success", "guarded_task")])
    server = Exporter(redis_srv.url, TASKIQ_MONITOR_BEARER_TOKEN="first-token-of-the-exporter")
    try:
        page.goto(server.url + "/")
        page.fill("#login-token", "first-token-of-the-exporter")
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector('[data-testid="task-card"][data-task-name="guarded_task"]')
        page.wait_for_selector('[data-testid="live-status"]:has-text("live")')
        server.kill()
        page.wait_for_selector('[data-notice="state"]:has-text("cannot be reached")')
        server.env["TASKIQ_MONITOR_BEARER_TOKEN"] = "second-token-of-the-exporter"
        server.start()
        page.wait_for_selector("#view-login:not([hidden])")
        notices = page.locator("#notices .notice")
        wait_for(lambda: notices.count() == 1, 30, "only the session notice is left")
        assert "session ended" in notices.first.inner_text()
        assert notices.first.get_attribute("class") == "notice info"
        page.fill("#login-token", "second-token-of-the-exporter")
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector('[data-testid="task-card"][data-task-name="guarded_task"]')
        page.wait_for_selector('[data-testid="live-status"]:has-text("live")')
        assert page.locator('#notices [data-notice="session"]').count() == 0
        assert page.locator("#notices .notice.error").count() == 0
        # Logging out is no ended session: the form comes without the notice (and without the overview's).
        page.click("#logout")
        page.wait_for_selector("#view-login:not([hidden])")
        wait_for(lambda: notices.count() == 0, 30, "no notice on the login form after a log-out")
    finally:
        server.stop()


def test_an_execution_whose_worker_is_gone_reads_as_lost_in_the_history_and_its_task_page(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    now = time.time()
    # "gone-host:4242" never heartbeats: no running set holds its attempt, as after a kill -9 and the worker TTL.
    emit_all(
        redis_srv.url,
        [
            event("orphan", "running", "lost_task", started_at=now, host="gone-host", pid=4242),
            event("fine", "success", "lost_task", started_at=now, finished_at=now, duration_seconds=0.1),
        ],
    )
    page.goto(exporter.url + "/#/history?task_name=lost_task")
    orphan = page.locator('[data-testid="history-row"][data-task-id="orphan"]')
    orphan.wait_for()
    assert orphan.get_attribute("data-lost") == "true"
    assert orphan.locator(".pill").inner_text() == "running · lost"
    assert "outcome of this attempt is unknown" in (orphan.locator(".pill").get_attribute("title") or "")
    fine = page.locator('[data-testid="history-row"][data-task-id="fine"]')
    assert fine.get_attribute("data-lost") == "false" and fine.locator(".pill").inner_text() == "success"

    orphan.locator("a").click()
    page.wait_for_selector('#detail-title:has-text("orphan")')
    status = page.locator("#detail-status")
    wait_for(lambda: "lost: its worker stopped" in status.inner_text(), 30, "the lost status line")
    assert "updated live" not in status.inner_text()
    assert page.locator('[data-testid="attempt-row"]').get_attribute("data-lost") == "true"


def test_a_task_opened_while_the_previous_task_is_still_loading_is_shown(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(
        redis_srv.url,
        [
            event("slow1", "failed", "switch_task", error_type="KeyError", error_message="the first"),
            event("next1", "failed", "switch_task", error_type="ValueError", error_message="the second"),
        ],
    )
    # The first task's answer is held (a slow store, a long events scan) until the second task page is open.
    held: list[Any] = []
    page.route("**/api/v1/executions/slow1", lambda route: held.append(route))
    page.goto(exporter.url + "/#/task/slow1?task_name=switch_task")
    wait_for(lambda: page.evaluate("true") and held, 30, "the first task's load is out")
    page.evaluate("location.hash = '#/task/next1?task_name=switch_task'")
    page.wait_for_selector("#detail-title:has-text('next1')")
    held[0].continue_()
    # Before: the first answer came back for a page no longer shown, and the second task's load, deferred behind it,
    # never ran: "Loading…" for good.
    page.wait_for_selector('#detail-status:has-text("1 attempt; last: failed")')
    assert page.inner_text("#detail-title") == "switch_task · next1"
    assert page.inner_text('[data-field="error_message"]') == "the second"


def test_a_task_address_with_a_stray_percent_opens_that_task_id_not_the_previous_task(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(
        redis_srv.url, [event("shown-first", "success", "percent_task"), event("50%off", "failed", "percent_task")]
    )
    page.goto(exporter.url + "/#/task/shown-first")
    page.wait_for_selector('#detail-title:has-text("percent_task · shown-first")')
    # Typed or pasted by hand: "%of" is no escape. Before: a script error, and the previous task's page stayed up
    # under the new address.
    page.evaluate("location.hash = '#/task/50%off'")
    page.wait_for_selector('#detail-title:has-text("percent_task · 50%off")')
    assert page.inner_text("#detail-status") == "1 attempt; last: failed"
    page.evaluate("location.hash = '#/task/no%zzsuch'")
    page.wait_for_selector('#detail-status:has-text("No execution with this task id")')
    assert page.inner_text("#detail-title") == "no%zzsuch"


def test_paging_the_history_by_keyboard_keeps_the_focus_on_the_pager_at_either_end(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event(f"k{i:03d}", "success", "keyboard_task") for i in range(120)])
    pages = {
        1: [f"k{i:03d}" for i in reversed(range(70, 120))],
        2: [f"k{i:03d}" for i in reversed(range(20, 70))],
        3: [f"k{i:03d}" for i in reversed(range(20))],
    }
    page.goto(exporter.url + "/#/history?task_name=keyboard_task")
    wait_page(page, 1, pages[1])
    focused = "document.activeElement.id"
    page.focus("#history-older")
    for number in (2, 3):
        page.keyboard.press("Enter")
        wait_page(page, number, pages[number])
    assert page.is_disabled("#history-older")
    # Before: the disabled button dropped the focus to <body>; the next Tab started from the top of the page.
    assert page.evaluate(focused) == "history-newer"
    for number in (2, 1):
        page.keyboard.press("Enter")
        wait_page(page, number, pages[number])
    assert page.is_disabled("#history-newer")
    assert page.evaluate(focused) == "history-older"
    page.keyboard.press("Enter")
    wait_page(page, 2, pages[2])


def test_older_pressed_again_while_the_next_page_loads_does_not_skip_to_a_wrong_page(
    redis_srv: RedisServer, exporter: Exporter, page: Any
) -> None:
    emit_all(redis_srv.url, [event(f"s{i:03d}", "success", "slow_page_task") for i in range(120)])
    page.goto(exporter.url + "/#/history?task_name=slow_page_task")
    wait_page(page, 1, [f"s{i:03d}" for i in reversed(range(70, 120))])
    # A slow store: the answer for page 2 is held while the user presses "Older" once more.
    held: list[Any] = []
    holding = [True]

    def hold(route: Any) -> None:
        if holding[0] and "cursor=" in route.request.url:
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/v1/executions?*", hold)
    page.click("#history-older")
    wait_for(lambda: page.evaluate("true") and held, 30, "page 2 is loading")
    page.click("#history-older")
    holding[0] = False
    for route in held:
        route.continue_()
    # Before: the second press went to "Page 3" with page 2's cursor (the first page's next one, not yet replaced),
    # and showed page 2's rows under it; "Newer" then showed them again as page 2.
    wait_page(page, 2, [f"s{i:03d}" for i in reversed(range(20, 70))])
    query = urllib.parse.parse_qs(page.url.split("#/history?", 1)[1])
    assert query["page"] == ["2"] and "trail" not in query
