"""`taskiq-monitor tail` against a real exporter and Redis that go away and come back: nothing lost, no exit."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import Callable

import pytest

from taskiq_monitor.settings import Settings
from taskiq_monitor.tail import NoFeed, Tail
from tests.integration._servers import child_env
from tests.integration.servers import RedisServer, free_port
from tests.integration.test_live_api import emit_events, event
from tests.integration.test_service_server import serve


async def until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def emit(url: str, ids: range, task: str) -> None:
    (await asyncio.to_thread(emit_events, url, [event(i, task=task) for i in ids])).stop()


def shown(out: io.StringIO, task: str) -> list[str]:
    """The task ids of the event lines of ``task`` (a line: time, status, task name, task id, ...)."""
    lines = [line.split() for line in out.getvalue().splitlines() if not line.startswith("taskiq-monitor tail:")]
    return [parts[3] for parts in lines if len(parts) > 3 and parts[2] == task]


def tail_of(port: int, out: io.StringIO) -> Tail:
    """A tail whose events and notes (stderr) both go to ``out``."""
    return Tail(f"http://127.0.0.1:{port}", None, [], [], None, None, color=False, out=out, err=out)


async def test_events_written_while_the_exporter_restarts_reach_a_tail_that_had_shown_none(
    redis_srv: RedisServer,
) -> None:
    # Workers write to Redis whether or not an exporter runs: what they wrote meanwhile must reach the tail, also
    # when it had shown nothing yet (a quiet feed) and so had no event id of its own to resume after.
    settings = Settings(redis_url=redis_srv.url)
    port = free_port()
    out = io.StringIO()
    async with serve(settings, port=port) as (_server, _port, app):
        running = asyncio.create_task(tail_of(port, out).run())
        await until(lambda: app.state.live.client_count() == 1, "tail connected")
    try:
        await emit(redis_srv.url, range(3), "quiet")
        async with serve(settings, port=port) as (_server, _port, app):
            await until(lambda: app.state.live.client_count() == 1, "tail reconnected")
            await emit(redis_srv.url, range(99, 100), "quiet")
            await until(lambda: "id99" in shown(out, "quiet"), "the event written after the reconnect")
        assert shown(out, "quiet") == ["id0", "id1", "id2", "id99"], out.getvalue()
    finally:
        running.cancel()


async def test_tail_continues_with_new_events_when_redis_comes_back_empty(redis_srv: RedisServer) -> None:
    # A Redis restarted without persistence holds no stream: the id the tail resumes after is "from the future"
    # there. That is the stream's reset, not the operator's mistake: the tail warns and goes on.
    settings = Settings(redis_url=redis_srv.url)
    out = io.StringIO()
    async with serve(settings) as (_server, port, app):
        running = asyncio.create_task(tail_of(port, out).run())
        try:
            await until(lambda: app.state.live.client_count() == 1, "tail connected")
            await emit(redis_srv.url, range(2), "before")
            await until(lambda: shown(out, "before") == ["id0", "id1"], "the events before the restart")
            await asyncio.to_thread(redis_srv.stop)
            await asyncio.to_thread(redis_srv.start)
            await until(
                lambda: running.done() or ("was reset" in out.getvalue() and app.state.live.client_count() == 1),
                "tail reconnected after the reset (or ended)",
            )
            assert not running.done(), (running.result(), out.getvalue())
            await emit(redis_srv.url, range(7, 8), "after")
            await until(lambda: shown(out, "after") == ["id7"], "the event after the reset")
            assert "future_id" not in out.getvalue()
        finally:
            running.cancel()


@pytest.mark.parametrize("with_redis", [True, False])
async def test_a_url_with_no_live_feed_is_refused_at_once_naming_the_causes(
    redis_srv: RedisServer, with_redis: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the exporter's base URL, or an exporter without a state store: it never will have a feed there (the
    # command prints the reason in one line and exits with 2: tests/test_tail.py).
    settings = Settings(redis_url=redis_srv.url) if with_redis else Settings()
    if not with_redis:
        # An in-process store a test before this one attached would be served instead (the in-memory demo's case).
        monkeypatch.setattr("taskiq_monitor.store.memory._MEMORY", None)
    async with serve(settings) as (_server, port, _app):
        url = f"http://127.0.0.1:{port}/monitor" if with_redis else f"http://127.0.0.1:{port}"
        out = io.StringIO()
        with pytest.raises(NoFeed) as refused:
            await asyncio.wait_for(Tail(url, None, [], [], None, None, color=False, out=out, err=out).run(), 60)
    assert str(refused.value).startswith(f"{url}/ws/events answered HTTP 403: "), refused.value
    assert "TASKIQ_MONITOR_REDIS_URL" in str(refused.value) and "base URL" in str(refused.value)
    assert "reconnecting" not in out.getvalue()


async def test_a_reader_that_closes_the_pipe_ends_tail_quietly(redis_srv: RedisServer) -> None:
    # `taskiq-monitor tail | head -3`, `| grep -m1 failed`: the reader exits, the next line meets a closed pipe.
    read_end, write_end = os.pipe()
    async with serve(Settings(redis_url=redis_srv.url)) as (_server, port, app):
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "taskiq_monitor.cli", "tail", "--url", f"http://127.0.0.1:{port}", "--no-color"],
            env=child_env(redis_srv.url),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
        os.close(write_end)
        try:
            await until(lambda: app.state.live.client_count() == 1 or proc.returncode is not None, "tail connected")
            os.close(read_end)
            await emit(redis_srv.url, range(3), "piped")
            code = await asyncio.wait_for(proc.wait(), 60)
            assert proc.stderr is not None
            stderr = (await proc.stderr.read()).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0, stderr
    assert stderr == ""


async def test_retries_back_off_while_the_exporter_accepts_and_closes_for_a_redis_outage() -> None:
    # The exporter accepts the handshake, then closes with 1011 "unavailable" while it cannot read Redis: the
    # handshake alone is no recovery, or the tail would retry at its first delay for the whole outage.
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    out = io.StringIO()
    async with serve(settings) as (_server, port, _app):
        running = asyncio.create_task(tail_of(port, out).run())
        try:
            await until(lambda: out.getvalue().count("disconnected:") >= 3, "three failed connections")
        finally:
            running.cancel()
    delays = [line.rsplit("reconnecting in ", 1)[1] for line in out.getvalue().splitlines() if "disconnected:" in line]
    assert delays[:3] == ["0.5s", "1.0s", "2.0s"], out.getvalue()
    assert "unavailable: state store unavailable" in out.getvalue()
