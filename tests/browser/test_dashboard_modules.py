"""The page's own modules, run in Chromium: the health rule of docs/ui.md, the live frames adapter (v1 single
event, v2 batch, duplicates after a resume), the sparkline, and how durations and rates are written."""

from __future__ import annotations

from typing import Any

from taskiq_monitor.events import bounded_task_id
from taskiq_monitor.service.ui import thresholds
from tests.browser._browser import Exporter

HEALTH = """async ([task, t]) => (await import('/static/js/health.js')).health(task, t)"""
DEFAULTS = thresholds()


def task(pending: int = 0, age: float | None = None, success: int = 0, failed: int = 0, retried: int = 0) -> dict:
    return {
        "task_name": "t",
        "pending": pending,
        "oldest_pending_age_seconds": age,
        "window": {"success": success, "failed": failed, "retried": retried},
    }


def test_the_health_rule_follows_the_documented_thresholds(exporter: Exporter, page: Any) -> None:
    page.goto(exporter.url + "/")

    def level(t: dict[str, Any]) -> str:
        return str(page.evaluate(HEALTH, [t, DEFAULTS])["level"])

    assert DEFAULTS["success_ratio_warning"] == 0.9 and DEFAULTS["success_ratio_ok"] == 0.99
    assert level(task()) == "healthy"  # nothing finished yet
    assert level(task(success=99, failed=1)) == "healthy"  # 99 %: at the "ok" line
    assert level(task(success=95, failed=5)) == "degraded"  # between 90 % and 99 %
    assert level(task(success=90, failed=10)) == "degraded"  # exactly 90 %: not below the warning line
    assert level(task(success=89, failed=11)) == "failing"
    assert level(task(success=0, failed=1)) == "failing"
    assert level(task(pending=100)) == "healthy" and level(task(pending=101)) == "degraded"  # backlog
    assert level(task(pending=1, age=600)) == "healthy" and level(task(pending=1, age=601)) == "degraded"
    assert level(task(pending=0, age=601)) == "healthy"  # an age without a pending task is stale
    stricter = dict(DEFAULTS, success_ratio_warning=0.99)
    assert page.evaluate(HEALTH, [task(success=97, failed=3), stricter])["level"] == "failing"


ADAPTER = """async () => {
  const { LiveConnection } = await import('/static/js/live.js');
  const live = new LiveConnection();
  const seen = [];
  const gaps = [];
  live.addEventListener('event', (e) => seen.push(e.detail.id));
  live.addEventListener('gap', (e) => gaps.push(e.detail));
  const send = (frame) => live.onFrame(JSON.stringify(frame));
  send({type: 'event', id: '100-0', event: {task_name: 'a'}});
  send({type: 'events', v: 2, events: [{id: '100-0', event: {}}, {id: '100-1', event: {}}, {id: '99-5', event: {}},
                                        {id: '101-0', event: {}}]});
  send({type: 'event', id: '101-0', event: {}});  // a resume overlapping what was already shown
  send({type: 'gap', first_event_id: '200-0', message: 'trimmed'});
  send({type: 'events', v: 2, events: [{id: '200-0', event: {}}]});
  send({type: 'ping', ts: 1});
  return { seen, gaps, last: live.lastId };
}"""


def test_the_frame_adapter_accepts_v1_and_v2_frames_and_drops_what_was_already_shown(
    exporter: Exporter, page: Any
) -> None:
    page.goto(exporter.url + "/")
    result = page.evaluate(ADAPTER)
    assert result == {"seen": ["100-0", "100-1", "101-0", "200-0"], "gaps": ["trimmed"], "last": "200-0"}


SPARKLINE = """async () => {
  const { sparkline } = await import('/static/js/sparkline.js');
  const svg = sparkline({success: [0, 2, 4, 2], failed: [0, 0, 1, 3], retried: [0, 0, 0, 1]}, '<b>t</b>');
  const lines = [...svg.querySelectorAll('polyline')].map(l => [l.getAttribute('class'),
    l.getAttribute('points').split(' ').map(p => Number(p.split(',')[1]))]);
  const title = svg.querySelector('title').textContent;
  return { tag: svg.tagName, title, lines, bold: svg.querySelectorAll('b').length };
}"""


def test_the_sparkline_draws_throughput_and_failures_scaled_to_the_busiest_minute(
    exporter: Exporter, page: Any
) -> None:
    page.goto(exporter.url + "/")
    result = page.evaluate(SPARKLINE)
    assert result["tag"] == "svg" and result["bold"] == 0  # the label stays text
    assert result["title"] == "<b>t</b>: 13 finished, 4 failed in the last 4 min"
    (total_class, total), (failed_class, failed) = result["lines"]
    assert (total_class, failed_class) == ("total", "failed")
    assert min(total) == total[3] < total[2] < total[1] < total[0] == max(total)  # 6 is the top, 0 the baseline
    assert failed[3] < failed[2] < failed[0]


FORMATS = """async ([durations, rates]) => {
  const { fmtDuration, fmtRate } = await import('/static/js/dom.js');
  return { durations: durations.map(fmtDuration), rates: rates.map(fmtRate) };
}"""


def test_a_duration_is_rounded_to_the_unit_shown_before_it_is_split(exporter: Exporter, page: Any) -> None:
    page.goto(exporter.url + "/")
    seconds = [0.0004, 0.25, 0.9996, 9.996, 59.97, 119.7, 3599.6, 7199.0, 7230.0]
    shown = page.evaluate(FORMATS, [seconds, []])["durations"]
    # Before: "1000 ms", "10.00 s", "60.0 s", "1 min 60 s", "59 min 60 s", "1 h 60 min" (an oldest-pending age or an
    # average duration on a card, a task's duration in the feed and the history).
    expected = ["0 ms", "250 ms", "1.00 s", "10.0 s", "1 min 0 s", "2 min 0 s", "1 h 0 min", "2 h 0 min", "2 h 1 min"]
    assert shown == expected


def test_a_rate_is_never_shown_on_a_line_it_has_not_reached(exporter: Exporter, page: Any) -> None:
    page.goto(exporter.url + "/")
    rates = [0.0, 1.0, 0.5, 95 / 96, 224 / 249, 4999 / 5000, 1 / 5000, None]
    shown = page.evaluate(FORMATS, [[], rates])["rates"]
    # 95/96 = 98.96 %: below the 99 % line, never "99.0 %"; 224/249 = 89.96 %: failing, never "90.0 %"; one failure
    # in 5,000 is neither "100 %" (success) nor "0.0 %" (the fleet's failure ratio).
    assert shown == ["0 %", "100 %", "50.0 %", "98.9 %", "89.9 %", "99.9 %", "< 0.1 %", "–"]
    degraded = page.evaluate(HEALTH, [task(success=95, failed=1), DEFAULTS])
    assert degraded == {"level": "degraded", "reasons": ["success rate 98.9 % < 99 %"]}  # was "99 % < 99 %"
    failing = page.evaluate(HEALTH, [task(success=224, failed=25), DEFAULTS])
    assert failing == {"level": "failing", "reasons": ["success rate 89.9 % < 90 %"]}  # was "90 % < 90 %"


SAME_TASK = """async ([recorded, wanted]) => (await import('/static/js/detail.js')).sameTask(recorded, wanted)"""


def test_the_task_page_knows_a_long_id_by_the_bounded_form_the_store_records(exporter: Exporter, page: Any) -> None:
    page.goto(exporter.url + "/")

    def same(recorded: str, wanted: str) -> bool:
        return bool(page.evaluate(SAME_TASK, [recorded, wanted]))

    long_id, other = "import:" + "a" * 600, "export:" + "a" * 600
    assert same("5d1b5aae", "5d1b5aae") and not same("5d1b5aae", "5d1b5aaf")
    assert same(bounded_task_id(long_id), long_id)  # as the worker bounds it (events.bounded_task_id)
    assert same(bounded_task_id(long_id), bounded_task_id(long_id))  # the page opened by the recorded id
    assert not same(bounded_task_id(other), long_id)
    assert not same(long_id[:512], long_id)  # a short id that is only a prefix: no digest, not the task
