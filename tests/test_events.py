"""TaskEvent: deferred redaction (on first read, once, from any thread) and the shared record encoding."""

from __future__ import annotations

import gc
import json
import threading
from typing import Any

import pytest

from taskiq_monitor.events import (
    MAX_RECORDED_TASK_ID_CHARS,
    EventContext,
    FinishedAttempt,
    StartedAttempt,
    TaskEvent,
    bounded_task_id,
    record_json,
    resolve,
    to_record,
)
from taskiq_monitor.redaction import REDACTED, Redactor


class CountingRedactor(Redactor):
    """A real Redactor that also counts how often the fields of an event were redacted."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def redact_fields(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().redact_fields(*args, **kwargs)


def _event(**kwargs: Any) -> TaskEvent:
    return TaskEvent("running", "t1", "login", 1.0, **kwargs)


def test_deferred_fields_are_redacted_on_first_read_and_only_once() -> None:
    redactor = CountingRedactor()
    event = _event(args=["ann", "hunter2"], kwargs={"password": "hunter2"}, labels={"x": 1})
    event.defer_redaction(redactor, ("user", "password"))
    assert redactor.calls == 0  # nothing on the emitting side
    assert event.kwargs == {"password": REDACTED}
    assert event.args == ["ann", REDACTED]
    assert "hunter2" not in repr(event) and "hunter2" not in record_json(event)
    assert redactor.calls == 1


def test_concurrent_first_readers_only_ever_see_redacted_values() -> None:
    redactor = Redactor()
    events = []
    for i in range(300):
        event = _event(kwargs={"token": f"s3cret-{i}", "nested": [{"api_key": "k"}] * 20})
        event.defer_redaction(redactor)
        events.append(event)
    seen: list[str] = []

    def read() -> None:
        for event in events:
            seen.append(json.dumps(event.kwargs) + record_json(event))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4 * 300
    assert not any("s3cret" in text or '"k"' in text for text in seen)


def test_failed_event_reuses_the_running_events_redacted_parameters() -> None:
    redactor = CountingRedactor()
    running = _event(args=["ann"], kwargs={"password": "hunter2"})
    running.defer_redaction(redactor)
    failed = TaskEvent("failed", "t1", "login", 2.0, error_message="login failed: password=hunter2")
    failed.defer_redaction(redactor, params_from=running)
    assert failed.kwargs == {"password": REDACTED} and failed.args == ["ann"]
    assert failed.error_message == "login failed: password=***"
    assert failed.kwargs is running.kwargs  # the same object: the walk ran once for the attempt
    assert redactor.calls == 2


def test_a_finished_event_with_its_attempts_labels_reuses_them_without_another_walk() -> None:
    redactor = CountingRedactor()
    labels = {"taskiq_monitor_enqueued_at": 1.5, "queue": "default"}
    running = _event(args=[1], kwargs={"x": "y"}, labels=dict(labels))
    running.defer_redaction(redactor)
    success = TaskEvent("success", "t1", "login", 2.0, labels=dict(labels))
    success.defer_redaction(redactor, params_from=running)
    assert success.labels == labels == running.labels
    assert redactor.calls == 1  # the running event's walk only: its labels were reused as they were


def test_a_finished_events_labels_are_walked_when_they_changed_or_held_a_secret() -> None:
    redactor = CountingRedactor()
    running = _event(labels={"session": "s3cret"})
    running.defer_redaction(redactor)
    # Equal raw labels, but the running event's were redacted: not equal to its safe copy, so walked again.
    same = TaskEvent("success", "t1", "login", 2.0, labels={"session": "s3cret"})
    same.defer_redaction(redactor, params_from=running)
    assert same.labels == {"session": REDACTED}
    changed = TaskEvent("failed", "t1", "login", 2.0, labels={"session": "other", "_retries": "1"})
    changed.defer_redaction(redactor, params_from=running)
    assert changed.labels == {"session": REDACTED, "_retries": "1"}
    assert redactor.calls == 3


def test_a_failing_redaction_empties_the_fields_and_reports() -> None:
    class Broken(Redactor):
        def redact_fields(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    reported: list[bool] = []
    event = _event(args=["hunter2"], kwargs={"x": "hunter2"}, error_message="hunter2", traceback="hunter2")
    event.defer_redaction(Broken(), on_error=lambda: reported.append(True))
    record = to_record(event)
    assert (record["args"], record["kwargs"], record["error_message"], record["traceback"]) == ([], {}, None, None)
    assert reported == [True]


def test_encoded_record_is_the_record_as_compact_json_and_computed_once() -> None:
    event = _event(args=["é", 1.5], kwargs={"n": None}, host="h", pid=7)
    line = record_json(event)
    assert json.loads(line) == to_record(event)
    assert "é" in line and " " not in line
    assert record_json(event) is line


def test_a_lone_surrogate_is_escaped_not_fatal() -> None:
    event = _event(args=["x"], host="h")
    event.task_id = "abc\ud800"
    assert json.loads(record_json(event))["task_id"] == "abc\ud800"


def test_statuses_have_one_home_and_keep_their_values() -> None:
    from taskiq_monitor import events, metrics
    from taskiq_monitor.events import EVENT_STATUSES, TaskStatus

    assert [str(s) for s in EVENT_STATUSES] == ["pending", "running", "success", "failed", "retried"]
    assert metrics.COMPLETED_STATUSES == (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.RETRIED)
    assert (metrics.STATUS_SUCCESS, events.STATUS_PENDING) == ("success", "pending")  # the public names stay
    assert json.loads(record_json(TaskEvent(TaskStatus.RETRIED, "t", "x", 0.0)))["status"] == "retried"


async def test_event_sink_base_gives_defaults_for_the_optional_parts() -> None:
    from taskiq_monitor.events import EventSink

    class Minimal(EventSink):
        def __init__(self) -> None:
            self.got: list[TaskEvent] = []

        def emit(self, event: TaskEvent) -> None:
            self.got.append(event)

    sink = Minimal()
    assert sink.active is True
    sink.attach_broker(object())
    await sink.start()
    await sink.close()
    sink.emit(_event())
    assert len(sink.got) == 1


def test_threads_resolving_one_handle_at_once_share_one_event_redacted_once() -> None:
    redactor = CountingRedactor()
    context = EventContext(redactor, lambda task: ("user", "password"), None, coalesce=True)
    for _ in range(20):
        started = StartedAttempt("t1", "login", 1, 10.0, 9.5, 0.5)
        started.defer(context, "host", 1, ["ann", "hunter2"], {}, {"x": 1}, None, None)
        finished = FinishedAttempt(started, "success", 11.0, 1.0, {"x": 1}, None, None)
        started.done = True
        barrier = threading.Barrier(4)
        got: list[Any] = []

        def take(item: Any, barrier: threading.Barrier, got: list[Any]) -> None:
            barrier.wait()
            got.append(resolve(item))

        threads = [threading.Thread(target=take, args=(finished, barrier, got)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(event) for event in got}) == 1
        event = got[0]
        assert event.args == ["ann", REDACTED] and (event.started_at, event.queue_wait_seconds) == (10.0, 0.5)
        assert resolve(started) is None  # coalesced into the final event
    assert redactor.calls == 20


def test_a_handle_without_its_context_is_an_error_not_an_unredacted_event() -> None:
    started = StartedAttempt("t1", "login", 1, 10.0, None, None)
    with pytest.raises(RuntimeError):
        resolve(started)


def _finished_from_handles(kwargs: dict[str, Any]) -> TaskEvent:
    context = EventContext(Redactor(), lambda task: (), None, coalesce=True)
    started = StartedAttempt("t1", "report", 1, 10.0, 9.5, 0.5)
    started.defer(context, "host", 1, [7], dict(kwargs), {"queue": "default"}, None, None)
    finished = FinishedAttempt(started, "success", 11.0, 1.0, {"queue": "default"}, None, None)
    started.done = True
    assert resolve(started) is None
    event = resolve(finished)
    assert event is not None
    return event


def test_plain_parameters_are_recorded_as_the_text_that_was_checked() -> None:
    options: dict[str, Any] = {"lang": "en", "retries": 2}
    event = _finished_from_handles({"options": options})
    line = record_json(event)
    # The task (or anything holding its argument) changes the container after the check: nothing unchecked gets out.
    options["password"] = "hunter2"
    options["lang"] = "de"
    assert json.loads(line)["kwargs"] == {"options": {"lang": "en", "retries": 2}}
    assert event.kwargs == {"options": {"lang": "en", "retries": 2}}
    assert to_record(event)["kwargs"] == {"options": {"lang": "en", "retries": 2}}
    assert json.loads(line) == to_record(event)


def test_a_built_event_keeps_no_parameter_container_for_the_cyclic_gc() -> None:
    # A queued event lives until every sink took it; copies of its parameters held there made the process collect
    # young objects about a third more often (docs/benchmarks.md, sixth pass).
    event = _finished_from_handles({"options": {"lang": "en", "retries": 2}, "ids": [1, 2, 3]})
    record_json(event)
    held = [obj for obj in gc.get_referents(event) if isinstance(obj, list | dict)]
    assert held == []
    assert event.args == [7] and event.labels == {"queue": "default"}  # decoded for a reader that wants objects


def test_a_final_event_carries_the_running_events_checked_parameters_text() -> None:
    redactor = CountingRedactor()
    options: dict[str, Any] = {"lang": "en"}
    running = _event(args=[1], kwargs={"options": options}, labels={"queue": "default"})
    running.defer_redaction(redactor)
    record_json(running)  # a long attempt: its running event was built while the task ran
    options["token"] = "s3cret"  # ...which then changed its argument
    success = TaskEvent("success", "t1", "login", 2.0, labels={"queue": "default"})
    success.defer_redaction(redactor, params_from=running)
    assert json.loads(record_json(success))["kwargs"] == {"options": {"lang": "en"}}
    assert redactor.calls == 1


# -- values redacted by key never stay in the error text of a later event of the attempt ----------------------------
ERROR = "cannot connect to postgres://alice:s3cr3tpw@db/prod as alice with hunter2"


@pytest.mark.parametrize("running_read_first", [True, False])
def test_a_failed_event_is_scrubbed_of_the_values_its_running_event_redacted(running_read_first: bool) -> None:
    redactor = CountingRedactor()
    running = _event(
        args=["alice", "hunter2"], kwargs={"dsn": "postgres://alice:s3cr3tpw@db/prod"}, labels={"queue": "default"}
    )
    running.defer_redaction(redactor, ("user", "password"))
    if running_read_first:  # a sink's thread took the running event before the task failed
        record_json(running)
    failed = TaskEvent("failed", "t1", "login", 2.0, labels={"queue": "default"}, error_message=ERROR, traceback=ERROR)
    failed.defer_redaction(redactor, ("user", "password"), params_from=running)
    assert failed.error_message == failed.traceback == f"cannot connect to {REDACTED} as alice with {REDACTED}"
    assert (failed.args, failed.kwargs) == (["alice", REDACTED], {"dsn": REDACTED})
    assert redactor.calls == 2  # one call each: the parameters were still redacted once for the attempt


def test_the_texts_of_secrets_are_kept_by_the_event_only_and_never_rendered() -> None:
    running = _event(kwargs={"password": "hunter2"})
    running.defer_redaction(Redactor())
    line = record_json(running)
    assert "hunter2" not in line + repr(running) + json.dumps(to_record(running))
    assert "hunter2" in running._secrets  # what a later event of the attempt scrubs; freed with this event
    plain = _event(kwargs={"lang": "en"})
    plain.defer_redaction(Redactor())
    record_json(plain)
    assert plain._secrets == ()  # the fast path proved there was nothing to redact: nothing found, nothing kept


def _handles(coalesce: bool, error: str) -> tuple[StartedAttempt, FinishedAttempt]:
    context = EventContext(Redactor(), lambda task: ("user", "password"), None, coalesce=coalesce)
    started = StartedAttempt("t1", "login", 1, 10.0, 9.5, 0.5)
    started.defer(context, "host", 1, ["alice", "hunter2"], {"token": "tok-4711"}, {"x": 1}, None, None)
    finished = FinishedAttempt(
        started, "failed", 11.0, 1.0, {"x": 1}, None, None, "ValueError", error, f"Traceback …\nValueError: {error}\n"
    )
    started.done = True
    return started, finished


@pytest.mark.parametrize("coalesce", [True, False])
def test_an_event_built_from_handles_in_a_sinks_thread_is_scrubbed_of_its_attempts_secrets(coalesce: bool) -> None:
    started, finished = _handles(coalesce, "alice with hunter2 and tok-4711")
    running = resolve(started)
    assert (running is None) is coalesce  # coalesced: the final event walks the raw parameters itself
    failed = resolve(finished)
    assert failed is not None and failed.args == ["alice", REDACTED] and failed.kwargs == {"token": REDACTED}
    assert failed.error_message == f"alice with {REDACTED} and {REDACTED}"
    assert failed.traceback == f"Traceback …\nValueError: alice with {REDACTED} and {REDACTED}\n"
    assert "hunter2" not in record_json(failed) and "tok-4711" not in record_json(failed)


def test_a_task_id_longer_than_the_bound_is_recorded_as_its_head_and_a_digest_of_the_whole() -> None:
    uuid = "5d1b5aaeeaee421d897e5b55a1442d25"
    at_bound = "k" * MAX_RECORDED_TASK_ID_CHARS
    assert bounded_task_id(uuid) == uuid and bounded_task_id(at_bound) == at_bound
    one, two = "report:" + "t/" * 5000 + "1", "report:" + "t/" * 5000 + "2"  # the same head, 10 KB each
    assert len(bounded_task_id(one)) == MAX_RECORDED_TASK_ID_CHARS
    assert bounded_task_id(one).startswith("report:t/t/")
    assert bounded_task_id(one) != bounded_task_id(two)  # told apart by the digest
    assert bounded_task_id(one) == bounded_task_id(one)  # every event of a task, and the API's lookup, agree
    assert bounded_task_id(bounded_task_id(one)) == bounded_task_id(one)  # the recorded id finds it too
    assert bounded_task_id("\ud800" * 600).startswith("\ud800")  # a lone surrogate (JSON-decoded) does not raise
    event = TaskEvent("success", one, "t", 0.0)
    assert event.task_id == bounded_task_id(one)
    assert json.loads(record_json(event))["task_id"] == bounded_task_id(one)
