"""The dashboard's live connection (static/js/live.js) and start-up (static/js/main.js) recovering on their own: an
exporter restart under a quiet feed, a Redis that came back empty, settings that failed to load, the browser
coming back online, and a connection that went silent; the focus after logging in."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser._browser import Exporter, emit_all, event, feed_rows
from tests.integration.servers import RedisServer, free_port, wait_for

STATUS = '[data-testid="live-status"]'
TOKEN = "s3cret-token-for-the-focus-test"


class SilentProxy:
    """A loopback TCP proxy in front of the exporter whose open connections can go silent: bytes are still accepted
    from both ends and never delivered, and nothing is closed. That is a connection whose path died without a word (a
    laptop resumed on another network, a NAT that forgot it): neither end gets an error, or a close."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.silenced: set[int] = set()  # ids of the client sockets whose connection went silent
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, id(client)), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, connection: int) -> None:
        try:
            while data := source.recv(65536):
                if connection not in self.silenced:
                    sink.sendall(data)
        except OSError:
            pass
        if connection not in self.silenced:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def silence(self) -> None:
        """Every connection open now goes silent; new ones are served."""
        with self.lock:
            self.silenced.update(id(s) for s in self.open)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for end in self.open:
                end.close()


@pytest.fixture
def proxy(exporter: Exporter) -> Iterator[SilentProxy]:
    server = SilentProxy(exporter.port)
    try:
        yield server
    finally:
        server.close()


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
    pause_clock(page)
    exporter.start()
    emit_all(redis_srv.url, [event("back", "success", "online_task")])
    page.context.set_offline(False)
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    page.clock.resume()  # the feed draws its rows on a timer
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="back"]')


def test_a_connection_that_went_silent_is_replaced_and_the_feed_gets_what_it_missed(
    redis_srv: RedisServer, proxy: SilentProxy, page: Any
) -> None:
    # Nothing closes such a connection: the page only receives, so its TCP has nothing to time out on, and it read
    # "live" forever while the events stopped. The exporter pings an idle feed every 15 s: a longer silence is a dead
    # connection. The page's timers run ahead on Playwright's clock instead of waiting that long.
    page.clock.install()
    page.goto(proxy.url + "/#/feed")
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    proxy.silence()
    emit_all(redis_srv.url, [event(f"m{i}", "success", "silent_task") for i in range(3)])
    page.clock.run_for(60_000)
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="m2"]')
    assert feed_ids(page) == ["m2", "m1", "m0"]
    assert page.inner_text(STATUS) == "live"


def test_back_online_a_connection_that_went_silent_meanwhile_is_replaced_at_once(
    redis_srv: RedisServer, proxy: SilentProxy, page: Any
) -> None:
    # Back online, the open connection is asked at once whether it still answers: the page's clock is stopped, then
    # moved by less than the silence after which the page would ask by itself.
    page.clock.install()
    page.goto(proxy.url + "/#/feed")
    page.wait_for_selector(f"{STATUS}:text-is('live')")
    pause_clock(page)
    proxy.silence()
    emit_all(redis_srv.url, [event("n0", "success", "silent_task")])
    page.context.set_offline(True)
    page.context.set_offline(False)
    # The browser delivers "online" to the page on its own time: on a loaded machine it came after the clock had run,
    # and the ping it sends then had no time left to go unanswered.
    wait_for(lambda: page.evaluate("window.taskiqMonitor.live.probeAt > 0"), 30, "the page's ping when back online")
    page.clock.run_for(15_000)  # the answer's deadline (10 s) and the next check (every 5 s), not 20 s of silence
    # Given up: before, it read "live" until the 20 s were up. Waited for in real time with the page's clock held at
    # 15 s (a socket's close event reaches the page on the browser's own time; read at once it still said "live"
    # on a loaded machine).
    page.wait_for_selector(f"{STATUS}:text-is('reconnecting')", timeout=30_000)
    page.clock.resume()
    page.wait_for_selector('[data-testid="feed-row"][data-task-id="n0"]')
    assert feed_ids(page) == ["n0"]


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


def pause_clock(page: Any) -> None:
    """Stop the page's clock about where it is. A second ahead: it runs on while the call travels, and pausing at a
    time already past fails ("Cannot fast-forward to the past", seen on a loaded machine)."""
    page.clock.pause_at(page.evaluate("() => Date.now() / 1000") + 1)  # seconds
