"""Pushing (sinks/loki/transport.py): outages, hangs, 429 and Retry-After, isolating a record Loki rejects."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki import LokiSink, PushEntry, decode_push
from taskiq_monitor.sinks.loki import transport as transport_module
from taskiq_monitor.sinks.loki.transport import Backoff, Outcome, Transport, isolate
from tests.blocking import blocking_calls
from tests.loki_double import LokiPushDouble
from tests.sinks.loki.helpers import counted, event, wait


def test_503_outage_spools_then_replays_everything_exactly_once(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, registry = make_sink()
    loki.set_mode("503")
    for i in range(300):
        sink.emit(event(i))
    wait(lambda: counted(registry, "spooled") == 300)
    assert registry.get_sample_value("taskiq_monitor_log_spool_bytes") > 0
    assert list(sink.spooled_files())
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 300, 10)
    assert sorted(k[0] for k in loki.record_keys()) == sorted(f"task-{i}" for i in range(300))
    assert loki.duplicates == 0
    wait(lambda: registry.get_sample_value("taskiq_monitor_log_spool_bytes") == 0)
    # The double has the entries before the sender has read the response and counted them.
    wait(lambda: counted(registry, "shipped") >= 300)
    assert counted(registry, "shipped") == 300 and counted(registry, "dropped") == 0
    assert not list(sink.spooled_files())


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_refused_or_hanging_loki_never_blocks_emit_and_loses_nothing(
    loki: LokiPushDouble, make_sink: Any, mode: str
) -> None:
    # A push that hangs for as long as the test runs: emit must not wait for it (nor for anything else).
    sink, registry = make_sink(loki_queue_max_records=1000, loki_timeout_seconds=600)
    asyncio.run(sink.start())  # start-up (threads) is the middleware's startup hook, not part of an emit
    loki.set_mode(mode)
    events = [event(i) for i in range(3000)]  # 3x the queue bound: the collector spools while the sender waits
    if mode == "hang":
        sink.emit(events[0])
        wait(lambda: loki.stats.by_status.get(0, 0) == 1)  # the sender is inside a push that is never answered

    blocked: list[str] = []
    rest = events[1:] if mode == "hang" else events
    for start in range(0, len(rest), 500):
        burst = rest[start : start + 500]
        blocked += blocking_calls(lambda burst=burst: [sink.emit(record) for record in burst])
        wait(lambda: not sink._queue, 30)  # the collector keeps up between bursts: the queue bound drops nothing
    assert blocked == []  # emit only appends: no socket, file, sleep or wait on the caller's thread
    if mode == "hang":
        # Every emit returned while that first push was still unanswered (not timed out, not retried).
        assert loki.stats.requests == 1 and loki.stats.by_status == {0: 1}
    wait(lambda: counted(registry, "spooled") + counted(registry, "shipped") + sink.pending() >= 3000, 30)
    assert sink.pending() <= 1000 + LokiSink.OUTBOX_MAX * 1000
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 3000, 30)
    assert loki.duplicates == 0 and counted(registry, "dropped") == 0


def test_429_honours_retry_after(loki: LokiPushDouble, make_sink: Any) -> None:
    loki.retry_after = "0.6"
    loki.set_mode("429")
    sink, _ = make_sink(loki_backoff_initial_seconds=0.01, loki_backoff_max_seconds=5, loki_retries=5)
    sink.emit(event(1))
    wait(lambda: loki.stats.by_status.get(429, 0) >= 2, 5)
    times = [t for t, status in loki.stats.request_times if status == 429]
    assert times[1] - times[0] >= 0.55
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 1, 5)


def test_400_isolates_and_drops_only_the_poisoned_record(loki: LokiPushDouble, make_sink: Any) -> None:
    loki.set_mode("poison")
    sink, registry = make_sink(loki_batch_wait_seconds=0.3)
    for i in range(64):
        sink.emit(event(i, kwargs={"text": loki.poison_marker if i == 37 else "fine"}))
    loki.wait_for(lambda d: len(d.entries) == 63, 10)
    assert "task-37" not in {k[0] for k in loki.record_keys()}
    wait(lambda: counted(registry, "dropped") == 1)
    # The double has the entries before the sender has read the response and counted them.
    wait(lambda: counted(registry, "shipped") >= 63)
    assert counted(registry, "shipped") == 63 and loki.duplicates == 0


def test_isolate_drops_only_the_rejected_records_and_returns_the_rest_when_loki_goes_away() -> None:
    labels = (("service_name", "taskiq"),)
    entries: list[PushEntry] = [(labels, str(i), f"line-{i}", {}) for i in range(8)]
    bad = {"line-2", "line-5"}

    def post(body: bytes) -> str:
        return Outcome.BAD if {e[2] for e in decode_push(body)} & bad else Outcome.OK

    shipped: list[int] = []
    rejected: list[int] = []
    assert isolate(entries, post, shipped.append, lambda: rejected.append(1)) == []
    assert sum(shipped) == 6 and len(rejected) == 2
    # Loki goes away in the middle of a split: nothing is dropped, what was not accepted comes back for the spool.
    outcomes = iter([Outcome.OK, Outcome.RETRY])
    shipped.clear()
    rest = isolate(entries, lambda body: next(outcomes), shipped.append, lambda: rejected.append(1))
    assert shipped == [4] and rest == entries[4:] and len(rejected) == 2


def test_backoff_doubles_up_to_its_cap_with_jitter_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    # A frozen clock and the jitter's bounds, so that the delays are exact.
    monkeypatch.setattr(transport_module, "time", SimpleNamespace(monotonic=lambda: 100.0))
    jitter = {"factor": 1.0}
    monkeypatch.setattr(transport_module, "random", SimpleNamespace(uniform=lambda low, high: jitter["factor"]))
    backoff = Backoff(Settings(loki_backoff_initial_seconds=0.5, loki_backoff_max_seconds=3.0))
    assert backoff.remaining() == 0
    delays = []
    for _ in range(5):
        backoff.failed(None)
        delays.append(backoff.remaining())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    jitter["factor"] = 0.5  # the low end of the jitter: half the step
    backoff.failed(None)
    assert backoff.remaining() == 1.5
    backoff.failed(2.5)  # Retry-After above the jittered delay wins…
    assert backoff.remaining() == 2.5
    backoff.failed(60.0)  # …up to the cap
    assert backoff.remaining() == 3.0
    backoff.reset()
    assert backoff.remaining() == 0 and backoff.step == 0


def test_push_headers_carry_json_and_the_configured_credentials() -> None:
    def warn(*args: Any, **kwargs: Any) -> None:
        pass

    bearer = Transport(
        Settings(loki_url="http://127.0.0.1:9", loki_bearer_token="tok-1", loki_tenant_id="team-a"),  # type: ignore[arg-type]
        warn,
    )
    headers = bearer.headers()
    # Content-Encoding is set per push, from the body (gzip, or plain JSON with loki_compression=none: test_sink).
    assert headers["Content-Type"] == "application/json" and "Content-Encoding" not in headers
    assert headers["Authorization"] == "Bearer tok-1" and headers["X-Scope-OrgID"] == "team-a"
    assert bearer.auth() is None
    basic = Transport(Settings(loki_url="http://127.0.0.1:9", loki_username="u", loki_password="p"), warn)  # type: ignore[arg-type]
    assert "Authorization" not in basic.headers() and "X-Scope-OrgID" not in basic.headers()
    auth = basic.auth()
    assert isinstance(auth, httpx.BasicAuth)
    request = next(auth.auth_flow(httpx.Request("POST", basic.url)))
    assert request.headers["Authorization"] == "Basic dTpw"  # base64("u:p")


def test_clients_share_one_verifying_tls_context_per_process() -> None:
    import ssl

    from taskiq_monitor.sinks.loki.transport import _tls_context

    context = _tls_context()
    assert context is _tls_context()  # built once: loading the CA bundle costs ~20-40 ms per client otherwise
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
