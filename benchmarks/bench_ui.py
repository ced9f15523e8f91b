"""Web dashboard benchmark, measured in Chromium: freshness, initial load, and (``--scale``) a long run at 1,000
events/s.

Run (needs redis-server and chromium on PATH; `make bench-ui`)::

    python benchmarks/bench_ui.py [--samples 40] [--loads 5] [--scale --minutes 5 --rate 1000]

What it does:

1. starts a throw-away redis-server and ``taskiq-monitor serve`` (the exporter with the dashboard) on free ports;
2. fills the store: 15 task types and a full event stream (``--fill`` events, default the stream's cap 100,000),
   written through the real ``StateSink``;
3. **initial load**: ``--loads`` times, a new browser context (cold cache, no cookies) opens ``/`` and the time from
   navigation start to all 15 cards rendered with their numbers is read from the page (``performance.now()``);
4. **freshness**: two pages stay open (overview, live feed). ``--samples`` times, a task is taken through running ->
   success by ``StateSink.emit`` (what the middleware hook calls) and the moment of the ``emit`` is recorded;
   MutationObservers in the pages record when the card's success count shows the new value and when the feed row
   appears (``Date.now()``; same host, same clock). Reported: p50/p99/max of (visible - hook), per surface;
5. **scale** (``--scale``): ``--rate`` events/s for ``--minutes`` with both pages open; every 30 s it reads the JS
   heap and DOM node counts (Chrome DevTools Protocol ``Performance.getMetrics``), the feed's row count, the page's
   main-thread lag (worst lateness of a 100 ms timer) and how far behind the newest event shown is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "exporter")]

from prometheus_client import CollectorRegistry  # noqa: E402
from tests.browser._browser import Exporter, launch_browser  # noqa: E402
from tests.integration.servers import RedisServer, wait_for  # noqa: E402

from taskiq_monitor.events import TaskEvent  # noqa: E402
from taskiq_monitor.settings import Settings  # noqa: E402
from taskiq_monitor.sinks.state import StateSink  # noqa: E402

TASK_TYPES = [f"bench_task_{i:02d}" for i in range(14)] + ["fresh_task"]
OBSERVE_CARD = """(name) => {
  window.__seen = {};
  const node = document.querySelector(`[data-testid="task-card"][data-task-name="${name}"] [data-field="success"]`);
  new MutationObserver(() => { const v = node.textContent; if (!(v in window.__seen)) window.__seen[v] = Date.now(); })
    .observe(node, {childList: true, characterData: true, subtree: true});
}"""
OBSERVE_FEED = """() => {
  window.__rows = {};
  new MutationObserver((records) => { const now = Date.now();
    for (const r of records) for (const n of r.addedNodes)
      if (n.dataset && n.dataset.status === "success" && !(n.dataset.taskId in window.__rows))
        window.__rows[n.dataset.taskId] = now; })
    .observe(document.getElementById("feed-rows"), {childList: true});
}"""

# The page's main-thread responsiveness: the worst lateness of a 100 ms timer since the last read.
LAG_MONITOR = """() => { window.__lag = 0; let last = performance.now();
  setInterval(() => { const now = performance.now(); window.__lag = Math.max(window.__lag, now - last - 100);
    last = now; }, 100); }"""
LAG_READ = """() => { const lag = window.__lag; window.__lag = 0;
  const id = window.taskiqMonitor ? window.taskiqMonitor.live.lastId : null;
  return { lag, visible: document.visibilityState, delay: id ? Date.now() - Number(id.split('-')[0]) : -1,
    elements: document.getElementsByTagName('*').length,
    rows: document.querySelectorAll('[data-testid="feed-row"]').length }; }"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sink(url: str) -> StateSink:
    return StateSink(Settings(redis_url=url), registry=CollectorRegistry())


def emit_paced(state: StateSink, event: TaskEvent) -> None:
    while len(state._buffer) >= state._capacity:  # at Redis's pace: nothing dropped
        time.sleep(0.001)
    state.emit(event)


def fill(url: str, count: int) -> None:
    state = sink(url)
    now = time.time()
    statuses = ["pending", "running", "success", "success", "failed", "retried"]
    for i in range(count):
        name = TASK_TYPES[i % len(TASK_TYPES)]
        status = statuses[i % len(statuses)]
        emit_paced(
            state,
            TaskEvent(
                status=status,
                task_id=f"fill-{i}",
                task_name=name,
                timestamp=now - (count - i) * 0.01,
                duration_seconds=0.05 if status in ("success", "failed") else None,
                kwargs={"user_id": i, "payload": "x" * 200},
                error_type="ValueError" if status == "failed" else None,
                error_message="bad input" if status == "failed" else None,
            ),
        )
    wait_for(lambda: state.written >= count, 600, f"{count} events written")
    state.stop()


def initial_load(browser: Any, url: str, loads: int) -> list[float]:
    times = []
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(url + "/", wait_until="commit")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"task-card\"]').length === 15", timeout=60_000
        )
        times.append(float(page.evaluate("() => performance.now()")))
        context.close()
    return times


def freshness(browser: Any, url: str, redis_url: str, samples: int) -> tuple[list[float], list[float]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    overview = context.new_page()
    overview.goto(url + "/")
    overview.wait_for_selector('[data-testid="task-card"][data-task-name="fresh_task"]')
    overview.wait_for_selector('[data-testid="live-status"]:has-text("live")')
    feed = context.new_page()
    feed.goto(url + "/#/feed")
    feed.wait_for_selector('[data-testid="live-status"]:has-text("live")')
    overview.evaluate(OBSERVE_CARD, "fresh_task")
    feed.evaluate(OBSERVE_FEED)
    base = int(
        overview.locator('[data-testid="task-card"][data-task-name="fresh_task"] [data-field="success"]').inner_text()
    )
    state = sink(redis_url)
    hooks: list[float] = []
    for i in range(samples):
        emit_paced(
            state, TaskEvent(status="running", task_id=f"fresh-{i}", task_name="fresh_task", timestamp=time.time())
        )
        time.sleep(0.3)
        at = time.time()
        emit_paced(
            state,
            TaskEvent(
                status="success", task_id=f"fresh-{i}", task_name="fresh_task", timestamp=at, duration_seconds=0.3
            ),
        )
        hooks.append(at)
        time.sleep(0.7)
    wait_for(
        lambda: str(base + samples) in overview.evaluate("() => window.__seen"), 60, "the last card update visible"
    )
    wait_for(lambda: f"fresh-{samples - 1}" in feed.evaluate("() => window.__rows"), 60, "the last feed row visible")
    seen = overview.evaluate("() => window.__seen")
    rows = feed.evaluate("() => window.__rows")
    state.stop()
    context.close()
    cards = [seen[str(base + i + 1)] / 1000 - hooks[i] for i in range(samples) if str(base + i + 1) in seen]
    feed_lat = [rows[f"fresh-{i}"] / 1000 - hooks[i] for i in range(samples) if f"fresh-{i}" in rows]
    return [c * 1000 for c in cards], [f * 1000 for f in feed_lat]


def scale(browser: Any, url: str, redis_url: str, minutes: float, rate: int) -> list[dict[str, float]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pages = {"overview": context.new_page(), "feed": context.new_page(), "blank (machine baseline)": context.new_page()}
    pages["overview"].goto(url + "/")
    pages["feed"].goto(url + "/#/feed")
    # The same timer in an empty page of the same browser: how late timers are on this machine anyway.
    pages["blank (machine baseline)"].goto(url + "/static/favicon.svg")
    for name, page in pages.items():
        if not name.startswith("blank"):
            page.wait_for_selector('[data-testid="live-status"]:has-text("live")')
        page.evaluate(LAG_MONITOR)
    cdp = {name: context.new_cdp_session(page) for name, page in pages.items()}
    for session in cdp.values():
        session.send("Performance.enable")
    stop = threading.Event()
    state = sink(redis_url)
    sent = [0]

    def produce() -> None:
        start = time.monotonic()
        statuses = ["running", "success", "failed"]
        while not stop.is_set():
            due = int((time.monotonic() - start) * rate)
            while sent[0] < due:
                i = sent[0]
                state.emit(
                    TaskEvent(
                        status=statuses[i % 3],
                        task_id=f"scale-{i // 3}",
                        task_name=TASK_TYPES[(i // 3) % len(TASK_TYPES)],
                        timestamp=time.time(),
                    )
                )
                sent[0] += 1
            time.sleep(0.005)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    rows: list[dict[str, float]] = []
    began = time.monotonic()
    try:
        while time.monotonic() - began < minutes * 60:
            time.sleep(30)
            for name, page in pages.items():
                probe = page.evaluate(LAG_READ)  # before the forced GC, which would count as lag
                cdp[name].send("HeapProfiler.collectGarbage")  # live objects only: growth, not garbage
                metrics = {m["name"]: m["value"] for m in cdp[name].send("Performance.getMetrics")["metrics"]}
                rows.append(
                    {
                        "minute": round((time.monotonic() - began) / 60, 1),
                        "page": name,  # type: ignore[dict-item]
                        "heap_mb": metrics["JSHeapUsedSize"] / 2**20,
                        "nodes": metrics["Nodes"],
                        "elements": probe["elements"],
                        "feed_rows": page.evaluate(
                            "() => document.querySelectorAll('[data-testid=\"feed-row\"]').length"
                        ),
                        "loop_lag_max_ms": probe["lag"],
                        "feed_delay_ms": probe["delay"],
                        "visible": probe["visible"],  # type: ignore[dict-item]
                        "events_sent": sent[0],
                    }
                )
                print(rows[-1], flush=True)
    finally:
        stop.set()
        thread.join(10)
        state.stop()
        context.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=40, help="freshness samples (default 40)")
    parser.add_argument("--loads", type=int, default=5, help="cold initial loads (default 5)")
    parser.add_argument("--fill", type=int, default=100_000, help="events in the store before loading (default 100k)")
    parser.add_argument("--scale", action="store_true", help="also run the 1,000 events/s scale run")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the scale run (default 5)")
    parser.add_argument("--rate", type=int, default=1000, help="events/s of the scale run (default 1000)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    redis = RedisServer()
    exporter = Exporter(redis.url)
    try:
        t0 = time.monotonic()
        fill(redis.url, args.fill)
        print(f"store filled: {args.fill} events, 15 task types ({time.monotonic() - t0:.0f} s)", flush=True)
        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            loads = initial_load(browser, exporter.url, args.loads)
            print(
                f"initial load (cold cache, 15 types, {args.fill} events): median {statistics.median(loads):.0f} ms, "
                f"max {max(loads):.0f} ms over {len(loads)} loads",
                flush=True,
            )
            cards, feed = freshness(browser, exporter.url, redis.url, args.samples)
            for name, values in (("cards", cards), ("feed", feed)):
                print(
                    f"freshness {name} (hook -> visible, {len(values)}/{args.samples} samples): "
                    f"p50 {pct(values, 0.5):.0f} ms, p99 {pct(values, 0.99):.0f} ms, max {max(values):.0f} ms",
                    flush=True,
                )
            if args.scale:
                rows = scale(browser, exporter.url, redis.url, args.minutes, args.rate)
                for page in ("overview", "feed", "blank (machine baseline)"):
                    mine = [r for r in rows if r["page"] == page]
                    if mine:
                        first, last = mine[0], mine[-1]
                        print(
                            f"scale {page}: heap {first['heap_mb']:.1f} -> {last['heap_mb']:.1f} MB (max "
                            f"{max(r['heap_mb'] for r in mine):.1f}), DOM nodes {first['nodes']:.0f} -> "
                            f"{last['nodes']:.0f} (elements {first['elements']:.0f} -> {last['elements']:.0f}), "
                            f"feed rows {last['feed_rows']:.0f}, "
                            f"main-thread lag median/max {statistics.median(r['loop_lag_max_ms'] for r in mine):.0f}/"
                            f"{max(r['loop_lag_max_ms'] for r in mine):.0f} ms, "
                            f"newest event shown {last['feed_delay_ms']:.0f} ms after its write, "
                            f"{last['events_sent']:.0f} events sent",
                            flush=True,
                        )
            browser.close()
    finally:
        exporter.stop()
        redis.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
