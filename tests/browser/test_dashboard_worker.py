"""The dashboard against real `taskiq-monitor worker` processes: cards, a task's life on card and feed, the error
detail with redacted parameters, and hostile task data rendered as text."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser._browser import api_get, api_numbers, card_numbers, feed_rows
from tests.integration._servers import WorkerProcess
from tests.integration.servers import RedisServer, produce, wait_for

QUEUE = "taskiq_monitor_demo"
XSS_IMG = "<img src=x onerror=\"window.__xss='img'\">"
XSS_SCRIPT = "<script>window.__xss='script'</script>"


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[RedisServer, WorkerProcess]]:
    redis = RedisServer()
    try:
        worker = WorkerProcess(redis.url, workers=2)
        try:
            yield redis, worker
        finally:
            worker.stop()
    finally:
        redis.cleanup()


def run(redis: RedisServer, *plan: tuple[str, list[Any], dict[str, Any]]) -> None:
    produce(redis.url, list(plan), kind="list", queue=QUEUE)


def card(page: Any, name: str, field: str) -> str:
    return str(page.locator(f'[data-testid="task-card"][data-task-name="{name}"] [data-field="{field}"]').inner_text())


def test_every_registered_type_has_a_card_whose_numbers_equal_the_api(
    stack: tuple[RedisServer, WorkerProcess], page: Any
) -> None:
    redis, worker = stack
    run(
        redis,
        ("score_message_task", [1], {}),
        ("score_message_task", [2], {}),
        ("detect_language_task", [3], {"sim": {"fail": "ValueError"}}),
    )
    wait_for(
        lambda: (
            api_numbers(api_get(worker.base + "/api/v1/tasks"))["detect_language_task"]["failed"] >= 1
            and api_numbers(api_get(worker.base + "/api/v1/tasks"))["score_message_task"]["success"] >= 2
        ),
        60,
        "the tasks finished",
    )
    page.goto(worker.base + "/")
    page.wait_for_selector('[data-testid="task-card"]')

    expected = api_numbers(api_get(worker.base + "/api/v1/tasks"))
    assert len(expected) == 15  # the demo's task types, zero-valued ones included
    wait_for(lambda: card_numbers(page) == api_numbers(api_get(worker.base + "/api/v1/tasks")), 30, "cards = API")
    shown = card_numbers(page)
    assert shown["score_message_task"]["success"] >= 2 and shown["detect_language_task"]["failed"] >= 1
    assert shown["rebuild_search_index_task"] == {"pending": 0, "running": 0, "success": 0, "failed": 0}
    # Trouble first: the failing/degraded type sorts before every healthy one.
    order = page.eval_on_selector_all('[data-testid="task-card"]', "cs => cs.map(c => c.dataset.taskName)")
    assert order.index("detect_language_task") < order.index("rebuild_search_index_task")
    assert page.locator('[data-fleet="workers"]').inner_text() == "2"


def test_a_started_task_shows_running_then_its_outcome_on_card_and_feed(
    stack: tuple[RedisServer, WorkerProcess], page: Any
) -> None:
    redis, worker = stack
    page.goto(worker.base + "/")
    page.wait_for_selector('[data-testid="task-card"][data-task-name="rebuild_search_index_task"]')
    page.wait_for_selector('[data-testid="live-status"]:has-text("live")')
    before = int(card(page, "rebuild_search_index_task", "success"))
    run(redis, ("rebuild_search_index_task", ["main"], {"sim": {"sleep": 4}}))
    wait_for(lambda: card(page, "rebuild_search_index_task", "running") == "1", 30, "card shows running")
    wait_for(lambda: card(page, "rebuild_search_index_task", "success") == str(before + 1), 60, "card shows success")
    assert card(page, "rebuild_search_index_task", "running") == "0"
    page.click('a[data-nav="feed"]')

    def task_rows() -> list[dict[str, str]]:
        return [r for r in feed_rows(page) if r["task_name"] == "rebuild_search_index_task"]

    # The feed view draws its backlog after the click: on a loaded machine, not at once.
    rows = wait_for(lambda: rows if len(rows := task_rows()) >= 2 else None, 30, "the feed shows the task's events")
    statuses = [r["status"] for r in reversed(rows)]  # oldest first
    # (the producer process of `produce` has no state sink: its "pending" event is not recorded)
    assert statuses == ["running", "success"], rows
    assert len({r["task_id"] for r in rows}) == 1


def test_error_detail_shows_the_traceback_and_the_redacted_parameters(
    stack: tuple[RedisServer, WorkerProcess], page: Any
) -> None:
    redis, worker = stack
    secret = f"bot-{uuid.uuid4().hex}"
    run(redis, ("save_telegram_message", [{"update_id": 7}], {"bot_token": secret, "sim": {"fail": "TimeoutError"}}))
    page.goto(worker.base + "/#/history?task_name=save_telegram_message&status=failed")
    page.wait_for_selector('[data-testid="history-row"][data-status="failed"]')
    page.locator('[data-testid="history-row"][data-status="failed"] a').first.click()
    detail = page.locator('[data-testid="error-detail"]')
    detail.locator('[data-field="traceback"]:has-text("Traceback")').wait_for()
    assert detail.locator('[data-field="error_type"]').inner_text() == "TimeoutError"
    assert "simulated TimeoutError" in detail.locator('[data-field="error_message"]').inner_text()
    assert "raise" in detail.locator('[data-field="traceback"]').inner_text()
    params = json.loads(detail.locator('[data-field="params"]').inner_text())
    assert params["kwargs"]["bot_token"] == "[REDACTED]"
    assert params["args"] == [{"update_id": 7}]
    assert secret not in page.content()
    assert page.locator("a[data-link]").count() == 0  # no Grafana address configured: no dead links


def test_hostile_parameters_and_error_messages_stay_text_and_no_script_runs(
    stack: tuple[RedisServer, WorkerProcess], page: Any
) -> None:
    redis, worker = stack
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(worker.base + "/#/feed")
    page.wait_for_selector('[data-testid="live-status"]:has-text("live")')
    run(
        redis,
        ("save_telegram_message", [{"text": XSS_IMG, "html": XSS_SCRIPT}], {"sim": {"fail": XSS_IMG + XSS_SCRIPT}}),
    )
    row = page.locator('[data-testid="feed-row"][data-task-name="save_telegram_message"][data-status="failed"]').filter(
        has_text="simulated <img"
    )
    row.wait_for()
    assert f"simulated {XSS_IMG}{XSS_SCRIPT}" in row.inner_text()
    row.locator("a").click()
    detail = page.locator('[data-testid="error-detail"]')
    detail.locator('[data-field="traceback"]:has-text("Traceback")').wait_for()
    assert XSS_IMG + XSS_SCRIPT in detail.locator('[data-field="error_message"]').inner_text()
    params = json.loads(detail.locator('[data-field="params"]').inner_text())
    assert params["args"] == [{"text": XSS_IMG, "html": XSS_SCRIPT}]
    # The payloads are text everywhere: no element was created from them, and nothing ran.
    assert page.locator('img[src="x"]').count() == 0
    assert page.evaluate("() => [...document.scripts].filter(s => !s.src).length") == 0
    page.goto(worker.base + "/#/history?task_name=save_telegram_message")
    page.wait_for_selector('[data-testid="history-row"]')
    assert page.evaluate("() => window.__xss === undefined")
    assert dialogs == []
