"""MonitoringMiddleware on a real InMemoryBroker, with a fresh registry per test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from taskiq import AsyncBroker, Context, InMemoryBroker, SimpleRetryMiddleware, SmartRetryMiddleware, TaskiqDepends
from taskiq.exceptions import NoResultError

from taskiq_monitor.events import (
    MAX_RECORDED_TASK_ID_CHARS,
    EventContext,
    EventSink,
    FinishedAttempt,
    QueuedEvent,
    StartedAttempt,
    TaskEvent,
    bounded_task_id,
    record_json,
    resolve,
)
from taskiq_monitor.middleware import (
    ENQUEUED_AT_LABEL,
    LEGACY_ENQUEUED_AT_LABEL,
    RETRIES_LABEL,
    MonitoringMiddleware,
)
from taskiq_monitor.settings import Settings
from tests.recording_sink import HandleSink, RecordingSink


class FatalSignal(BaseException):
    """A BaseException subclass (not Exception) raised by a task."""


_MONITORS: dict[int, MonitoringMiddleware] = {}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    # Hooks coalesce increments until the event loop's next iteration; read what a scrape would see after it.
    monitor = _MONITORS.get(id(registry))
    if monitor is not None:
        monitor.flush()
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def make(
    *,
    retry: str | None = None,
    monitor_first: bool = True,
    settings: Settings | None = None,
) -> tuple[AsyncBroker, MonitoringMiddleware, CollectorRegistry, RecordingSink]:
    registry = CollectorRegistry()
    sink = RecordingSink()
    monitor = MonitoringMiddleware(settings or Settings(), registry=registry, sinks=[sink])
    _MONITORS[id(registry)] = monitor
    middlewares: list[Any] = [monitor]
    if retry == "simple":
        retry_mw: Any = SimpleRetryMiddleware(default_retry_count=3)
    elif retry == "smart":
        retry_mw = SmartRetryMiddleware(default_retry_count=3, use_jitter=False, default_delay=0)
    else:
        retry_mw = None
    if retry_mw is not None:
        middlewares = [monitor, retry_mw] if monitor_first else [retry_mw, monitor]
    broker = InMemoryBroker(await_inplace=True).with_middlewares(*middlewares)
    return broker, monitor, registry, sink


def define_tasks(broker: AsyncBroker) -> dict[str, Any]:
    @broker.task(task_name="ok")
    async def ok(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    @broker.task(task_name="boom")
    async def boom() -> None:
        raise ValueError("bad input")

    @broker.task(task_name="flaky", retry_on_error=True, max_retries=3)
    async def flaky(fail_attempts: int, context: Context = TaskiqDepends()) -> str:
        attempt = int(context.message.labels.get("_retries", 0)) + 1
        if attempt <= fail_attempts:
            raise ConnectionError(f"attempt {attempt}")
        return "done"

    @broker.task(task_name="slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(1)

    @broker.task(task_name="fatal")
    async def fatal() -> None:
        raise FatalSignal("stop")

    @broker.task(task_name="skip")
    async def skip() -> None:
        raise NoResultError()

    return {"ok": ok, "boom": boom, "flaky": flaky, "slow": slow, "fatal": fatal, "skip": skip}


async def test_success_counts_duration_and_queue_wait() -> None:
    broker, _, reg, _ = make()
    tasks = define_tasks(broker)
    await broker.startup()
    for i in range(3):
        result = await (await tasks["ok"].kiq(i)).wait_result()
        assert result.return_value == i * 2
    assert value(reg, "taskiq_tasks_enqueued_total", task_name="ok") == 3
    assert value(reg, "taskiq_tasks_started_total", task_name="ok") == 3
    assert value(reg, "taskiq_tasks_completed_total", task_name="ok", status="success") == 3
    assert value(reg, "taskiq_tasks_running", task_name="ok") == 0
    assert value(reg, "taskiq_task_duration_seconds_count", task_name="ok", status="success") == 3
    # perf_counter precision: 3 × ≥10 ms sleeps, unlike taskiq's execution_time rounded to 10 ms.
    assert value(reg, "taskiq_task_duration_seconds_sum", task_name="ok", status="success") >= 0.03
    assert value(reg, "taskiq_task_queue_wait_seconds_count", task_name="ok") == 3
    await broker.shutdown()


async def test_running_gauge_counts_tasks_in_progress() -> None:
    broker, _, reg, _ = make()
    release = asyncio.Event()
    seen: list[float] = []

    @broker.task(task_name="blocking")
    async def blocking() -> None:
        seen.append(value(reg, "taskiq_tasks_running", task_name="blocking"))
        await release.wait()

    broker2 = InMemoryBroker().with_middlewares(*broker.middlewares)  # not in-place: tasks run concurrently
    broker2.register_task(blocking.original_func, task_name="blocking")
    await broker2.startup()
    for _ in range(3):
        await broker2.find_task("blocking").kiq()  # type: ignore[union-attr]
    for _ in range(100):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.01)
    assert value(reg, "taskiq_tasks_running", task_name="blocking") == 3
    release.set()
    await broker2.wait_all()
    assert value(reg, "taskiq_tasks_running", task_name="blocking") == 0
    await broker2.shutdown()


async def test_failure_counts_failed_and_error_type() -> None:
    broker, _, reg, sink = make()
    tasks = define_tasks(broker)
    await broker.startup()
    result = await (await tasks["boom"].kiq()).wait_result()
    assert result.is_err and isinstance(result.error, ValueError)
    assert value(reg, "taskiq_tasks_completed_total", task_name="boom", status="failed") == 1
    assert value(reg, "taskiq_tasks_completed_total", task_name="boom", status="success") == 0
    assert value(reg, "taskiq_task_errors_total", task_name="boom", error_type="ValueError") == 1
    failed = [e for e in sink.events if e.status == "failed"]
    assert len(failed) == 1
    assert failed[0].error_type == "ValueError" and failed[0].error_message == "bad input"
    assert failed[0].traceback is not None and 'raise ValueError("bad input")' in failed[0].traceback


@pytest.mark.parametrize("retry", ["simple", "smart"])
@pytest.mark.parametrize("monitor_first", [True, False])
async def test_retried_attempts_then_success(retry: str, monitor_first: bool) -> None:
    broker, _, reg, sink = make(retry=retry, monitor_first=monitor_first)
    tasks = define_tasks(broker)
    await broker.startup()
    await tasks["flaky"].kiq(2)
    await broker.wait_all()
    assert value(reg, "taskiq_tasks_started_total", task_name="flaky") == 3
    assert value(reg, "taskiq_tasks_completed_total", task_name="flaky", status="retried") == 2
    assert value(reg, "taskiq_tasks_completed_total", task_name="flaky", status="success") == 1
    assert value(reg, "taskiq_tasks_completed_total", task_name="flaky", status="failed") == 0
    assert value(reg, "taskiq_task_errors_total", task_name="flaky", error_type="ConnectionError") == 2
    assert value(reg, "taskiq_tasks_running", task_name="flaky") == 0
    assert [e.attempt for e in sink.events if e.status == "running"] == [1, 2, 3]
    finished = sorted((e.attempt, e.status) for e in sink.events if e.status in ("retried", "success", "failed"))
    assert finished == [(1, "retried"), (2, "retried"), (3, "success")]


@pytest.mark.parametrize("retry", ["simple", "smart"])
async def test_a_long_custom_task_id_is_recorded_bounded_and_its_retries_are_still_told_apart(retry: str) -> None:
    # A 10 KB task id used to be copied into every record, the history's keys and Loki's metadata.
    broker, _, reg, sink = make(retry=retry)
    tasks = define_tasks(broker)
    await broker.startup()
    long_id = "import:" + "tenant-42/" * 1000
    await tasks["flaky"].kicker().with_task_id(long_id).kiq(2)
    await broker.wait_all()
    assert {e.task_id for e in sink.events} == {bounded_task_id(long_id)}
    assert len(bounded_task_id(long_id)) == MAX_RECORDED_TASK_ID_CHARS
    finished = sorted((e.attempt, e.status) for e in sink.events if e.status in ("retried", "success", "failed"))
    assert finished == [(1, "retried"), (2, "retried"), (3, "success")]
    assert value(reg, "taskiq_tasks_running", task_name="flaky") == 0


async def test_a_long_custom_task_id_reaches_deferred_sinks_bounded() -> None:
    broker, sink = make_deferred(Settings(events_coalesce=False))
    login = broker.find_task("login")
    assert login is not None
    await broker.startup()
    long_id = "x" * 5000
    await login.kicker().with_task_id(long_id).kiq("ann", password="hunter2")
    handles = [item for item in sink.items if not isinstance(item, TaskEvent)]
    assert isinstance(handles[0], StartedAttempt) and isinstance(handles[1], FinishedAttempt)
    assert handles[0].task_id == bounded_task_id(long_id)  # the handle the sinks read on the loop
    events = [resolve(item) for item in sink.items]
    assert [(e.status, e.task_id) for e in events if e is not None] == [
        ("running", bounded_task_id(long_id)),
        ("success", bounded_task_id(long_id)),
        ("pending", bounded_task_id(long_id)),
    ]


@pytest.mark.parametrize("monitor_first", [True, False])
async def test_retries_exhausted_is_failed(monitor_first: bool) -> None:
    broker, _, reg, _ = make(retry="simple", monitor_first=monitor_first)
    tasks = define_tasks(broker)
    await broker.startup()
    await tasks["flaky"].kiq(10)
    await broker.wait_all()
    assert value(reg, "taskiq_tasks_completed_total", task_name="flaky", status="retried") == 2
    assert value(reg, "taskiq_tasks_completed_total", task_name="flaky", status="failed") == 1
    assert value(reg, "taskiq_tasks_running", task_name="flaky") == 0


async def test_timeout_is_failed_with_timeout_error() -> None:
    broker, _, reg, _ = make()
    tasks = define_tasks(broker)
    await broker.startup()
    result = await (await tasks["slow"].kiq()).wait_result()
    assert isinstance(result.error, TimeoutError)
    assert value(reg, "taskiq_tasks_completed_total", task_name="slow", status="failed") == 1
    assert value(reg, "taskiq_task_errors_total", task_name="slow", error_type="TimeoutError") == 1


async def test_task_raising_base_exception_keeps_its_result() -> None:
    plain = InMemoryBroker(await_inplace=True)
    plain_tasks = define_tasks(plain)
    broker, _, reg, _ = make()
    tasks = define_tasks(broker)
    await plain.startup()
    await broker.startup()
    expected = await (await plain_tasks["fatal"].kiq()).wait_result()
    got = await (await tasks["fatal"].kiq()).wait_result()
    assert type(got.error) is type(expected.error) is FatalSignal
    assert got.is_err == expected.is_err
    assert value(reg, "taskiq_task_errors_total", task_name="fatal", error_type="FatalSignal") == 1


async def test_task_raising_no_result_error_counts_as_success() -> None:
    broker, _, reg, _ = make()
    tasks = define_tasks(broker)
    await broker.startup()
    await tasks["skip"].kiq()
    await broker.wait_all()
    assert value(reg, "taskiq_tasks_completed_total", task_name="skip", status="success") == 1
    assert value(reg, "taskiq_tasks_completed_total", task_name="skip", status="retried") == 0


async def test_registered_tasks_exported_with_zeros_at_startup() -> None:
    from taskiq_monitor.metrics import MONITOR_COMPONENTS

    broker, _, reg, _ = make()
    define_tasks(broker)
    await broker.startup()
    for component in MONITOR_COMPONENTS:
        assert reg.get_sample_value("taskiq_monitor_errors_total", {"component": component}) == 0
    for name in ("ok", "boom", "flaky", "slow"):
        for status in ("success", "failed", "retried"):
            assert reg.get_sample_value("taskiq_tasks_completed_total", {"task_name": name, "status": status}) == 0
        assert reg.get_sample_value("taskiq_tasks_running", {"task_name": name}) == 0
        assert reg.get_sample_value("taskiq_tasks_enqueued_total", {"task_name": name}) == 0


async def test_unregistered_task_names_fold_into_other_beyond_cap() -> None:
    broker, monitor, reg, _ = make(settings=Settings(max_task_names=2))
    define_tasks(broker)
    await broker.startup()
    for i in range(5):
        monitor.pre_execute(_message(f"dynamic_{i}"))
    assert value(reg, "taskiq_tasks_started_total", task_name="dynamic_0") == 1
    assert value(reg, "taskiq_tasks_started_total", task_name="dynamic_1") == 1
    assert reg.get_sample_value("taskiq_tasks_started_total", {"task_name": "dynamic_2"}) is None
    assert value(reg, "taskiq_tasks_started_total", task_name="other") == 3
    # Registered tasks never fold, however many unknown names came first.
    monitor.pre_execute(_message("ok"))
    assert value(reg, "taskiq_tasks_started_total", task_name="ok") == 1


async def test_error_types_fold_into_other_beyond_cap() -> None:
    broker, _, reg, _ = make(settings=Settings(max_error_types=1))
    tasks = define_tasks(broker)
    await broker.startup()
    await tasks["boom"].kiq()
    await tasks["slow"].kiq()
    await broker.wait_all()
    assert value(reg, "taskiq_task_errors_total", task_name="boom", error_type="ValueError") == 1
    assert value(reg, "taskiq_task_errors_total", task_name="slow", error_type="other") == 1


async def test_unserializable_arguments_fail_exactly_as_without_monitoring() -> None:
    from taskiq.exceptions import SendTaskError

    plain = InMemoryBroker(await_inplace=True)
    broker, _, reg, sink = make()
    outcomes = []
    for b in (plain, broker):

        @b.task(task_name="takes_object")
        async def takes_object(obj: Any) -> str:
            return type(obj).__name__

        await b.startup()
        with pytest.raises(SendTaskError) as info:
            await takes_object.kiq(object())
        outcomes.append(type(info.value.__cause__))
    assert outcomes[0] is outcomes[1]
    assert value(reg, "taskiq_monitor_errors_total", component="middleware") == 0
    assert value(reg, "taskiq_tasks_started_total", task_name="takes_object") == 0
    # The broker never accepted the message: not enqueued, and no ``pending`` the shared state would keep forever.
    assert value(reg, "taskiq_tasks_enqueued_total", task_name="takes_object") == 0
    assert not [e for e in sink.events if e.task_name == "takes_object"]


async def test_broken_metrics_never_change_task_outcome() -> None:
    broker, monitor, reg, _ = make()
    tasks = define_tasks(broker)
    await broker.startup()

    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise OSError("metrics directory vanished")

    monitor.metrics._instruments["ok"] = Broken()  # type: ignore[assignment]
    monitor.metrics._instruments["boom"] = Broken()  # type: ignore[assignment]
    ok = await (await tasks["ok"].kiq(21)).wait_result()
    boom = await (await tasks["boom"].kiq()).wait_result()
    assert ok.return_value == 42 and not ok.is_err
    assert isinstance(boom.error, ValueError)
    assert value(reg, "taskiq_monitor_errors_total", component="middleware") >= 4


async def test_raising_sink_is_counted_and_other_sinks_still_receive() -> None:
    registry = CollectorRegistry()
    good = RecordingSink()

    class BadSink(RecordingSink):
        def emit(self, event: TaskEvent) -> None:
            raise RuntimeError("sink down")

    monitor = MonitoringMiddleware(Settings(), registry=registry, sinks=[BadSink(), good])
    _MONITORS[id(registry)] = monitor
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor)
    tasks = define_tasks(broker)
    await broker.startup()
    result = await (await tasks["ok"].kiq(1)).wait_result()
    assert result.return_value == 2
    assert sorted(e.status for e in good.events) == ["pending", "running", "success"]
    assert value(registry, "taskiq_monitor_errors_total", component="sink") == 3


async def test_a_sink_whose_close_hangs_does_not_keep_the_others_from_closing_within_the_shutdown_timeout() -> None:
    # taskiq gives broker.shutdown() --shutdown-timeout (5 s) in all, then the worker process exits without atexit
    # hooks. The sinks were closed one after the other: a state store whose Redis hung (5 s socket timeout) took the
    # whole budget, the Loki sink after it was never closed, and its records in memory were lost, uncounted.
    registry = CollectorRegistry()
    closed: list[str] = []

    class HangingClose(RecordingSink):
        async def close(self) -> None:
            await asyncio.Event().wait()  # Redis does not answer

    class FailingClose(RecordingSink):
        async def close(self) -> None:
            raise RuntimeError("cannot flush")

    class Flushing(RecordingSink):
        async def close(self) -> None:
            await asyncio.sleep(0)
            closed.append("flushed")

    sinks = [HangingClose(), FailingClose(), Flushing()]
    monitor = MonitoringMiddleware(Settings(), registry=registry, sinks=sinks)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(monitor.shutdown(), 1.0)  # what taskiq does with its shutdown timeout
    errors = int(value(registry, "taskiq_monitor_errors_total", component="sink_close"))
    assert closed == ["flushed"] and errors == 1


async def test_pre_send_stamps_enqueue_time_label() -> None:
    _broker, monitor, _, _ = make()
    message = _message("ok")
    monitor.pre_send(message)
    assert isinstance(message.labels[ENQUEUED_AT_LABEL], float)


async def test_bad_enqueue_label_is_ignored() -> None:
    _broker, monitor, reg, _ = make()
    message = _message("ok")
    message.labels[ENQUEUED_AT_LABEL] = "not-a-time"
    monitor.pre_execute(message)
    assert value(reg, "taskiq_tasks_started_total", task_name="ok") == 1
    assert value(reg, "taskiq_task_queue_wait_seconds_count", task_name="ok") == 0


def _message(task_name: str) -> Any:
    from taskiq import TaskiqMessage

    return TaskiqMessage(task_id=f"id-{task_name}", task_name=task_name, labels={}, args=[], kwargs={})


async def test_middleware_returning_a_copy_from_pre_execute_keeps_running_exact() -> None:
    from taskiq import TaskiqMessage, TaskiqMiddleware

    class Copying(TaskiqMiddleware):
        def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
            return message.model_copy(deep=True)

    registry = CollectorRegistry()
    monitor = MonitoringMiddleware(Settings(), registry=registry, sinks=[])
    _MONITORS[id(registry)] = monitor
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor, Copying())
    tasks = define_tasks(broker)
    await broker.startup()
    for i in range(5):
        await tasks["ok"].kiq(i)
    await tasks["boom"].kiq()
    assert value(registry, "taskiq_tasks_running", task_name="ok") == 0
    assert value(registry, "taskiq_tasks_completed_total", task_name="ok", status="success") == 5
    assert value(registry, "taskiq_tasks_completed_total", task_name="boom", status="failed") == 1
    assert value(registry, "taskiq_task_errors_total", task_name="boom", error_type="ValueError") == 1
    assert not monitor._in_flight


async def test_in_flight_records_are_bounded() -> None:
    from taskiq_monitor import middleware as mw

    broker, monitor, reg, _ = make()
    define_tasks(broker)
    await broker.startup()
    messages = [_message("ok") for _ in range(mw.MAX_IN_FLIGHT + 5)]
    for i, message in enumerate(messages):
        message.task_id = f"id-{i}"
        monitor.pre_execute(message)  # never finished: a leak the bound must contain
    assert len(monitor._in_flight) == mw.MAX_IN_FLIGHT
    assert value(reg, "taskiq_tasks_running", task_name="ok") == mw.MAX_IN_FLIGHT
    assert value(reg, "taskiq_monitor_errors_total", component="in_flight_overflow") == 5


def test_sends_from_many_threads_are_all_counted() -> None:
    import threading

    broker, _, reg, _ = make()
    tasks = define_tasks(broker)
    per_thread, threads = 300, 4

    def send_many() -> None:
        async def main() -> None:
            for i in range(per_thread):
                await tasks["ok"].kiq(i)

        asyncio.run(main())

    asyncio.run(broker.startup())
    workers = [threading.Thread(target=send_many) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert value(reg, "taskiq_tasks_enqueued_total", task_name="ok") == per_thread * threads
    assert value(reg, "taskiq_tasks_completed_total", task_name="ok", status="success") == per_thread * threads


def test_two_middlewares_on_one_registry_share_metrics() -> None:
    registry = CollectorRegistry()
    first = MonitoringMiddleware(Settings(), registry=registry, sinks=[])
    second = MonitoringMiddleware(Settings(), registry=registry, sinks=[])
    first.pre_execute(_message("from_first"))
    second.pre_execute(_message("from_second"))
    first.flush()
    assert registry.get_sample_value("taskiq_tasks_started_total", {"task_name": "from_first"}) == 1
    assert registry.get_sample_value("taskiq_tasks_started_total", {"task_name": "from_second"}) == 1


async def test_every_event_of_an_attempt_carries_the_redacted_parameters() -> None:
    broker, _, _, sink = make()

    @broker.task(task_name="login")
    async def login(user: str, password: str, fail: bool = False) -> None:
        if fail:
            raise PermissionError("denied")

    await broker.startup()
    await login.kiq("ann", password="hunter2")
    await login.kiq("bob", password="hunter3", fail=True)
    # In-place broker: the task runs inside .kiq(), so its ``pending`` (post_send) comes after it finished.
    assert [e.status for e in sink.events] == ["running", "success", "pending", "running", "failed", "pending"]
    for event in sink.events:
        assert event.args == [event.args[0]] and event.args[0] in ("ann", "bob")
        assert event.kwargs["password"] == "[REDACTED]", event.status
        assert "hunter" not in repr(event)
    failed = sink.events[4]
    assert failed.error_type == "PermissionError" and failed.error_message == "denied"
    # Redacted once per attempt: the finished events share the running event's redacted parameters.
    assert sink.events[1].kwargs is sink.events[0].kwargs and sink.events[4].kwargs is sink.events[3].kwargs


# -- issue 14 #11: the enqueue-time label is ours, in our namespace -------------------------------------------------


async def test_a_users_own_enqueued_at_label_is_never_touched() -> None:
    broker, _, reg, sink = make()
    seen: list[Any] = []

    @broker.task(task_name="labelled")
    async def labelled(context: Context = TaskiqDepends()) -> None:
        seen.append(context.message.labels.get("enqueued_at"))

    await broker.startup()
    await (await labelled.kicker().with_labels(enqueued_at="order-42").kiq()).wait_result()
    assert seen == ["order-42"]
    # Queue wait still measured, from the namespaced label.
    assert value(reg, "taskiq_task_queue_wait_seconds_count", task_name="labelled") == 1
    running = next(e for e in sink.events if e.status == "running")
    assert running.labels["enqueued_at"] == "order-42"
    assert isinstance(running.labels[ENQUEUED_AT_LABEL], float)
    await broker.shutdown()


def _queued_by_an_old_version(labels: dict[str, Any], labels_types: dict[str, int] | None = None) -> bytes:
    from taskiq import TaskiqMessage
    from taskiq.formatters.json_formatter import JSONFormatter

    message = TaskiqMessage(
        task_id="old", task_name="ok", labels=labels, labels_types=labels_types, args=[1], kwargs={}
    )
    return JSONFormatter().dumps(message).message


async def test_legacy_enqueued_at_float_of_a_message_queued_before_an_upgrade_is_read() -> None:
    import time

    from taskiq.receiver import Receiver

    broker, _, reg, sink = make()
    define_tasks(broker)
    await broker.startup()
    raw = _queued_by_an_old_version({LEGACY_ENQUEUED_AT_LABEL: time.time() - 30.0})
    await Receiver(broker, run_startup=False).callback(raw)
    assert value(reg, "taskiq_task_queue_wait_seconds_count", task_name="ok") == 1
    assert value(reg, "taskiq_task_queue_wait_seconds_sum", task_name="ok") >= 29.0
    running = next(e for e in sink.events if e.status == "running")
    assert running.queue_wait_seconds is not None and running.queue_wait_seconds >= 29.0
    await broker.shutdown()


async def test_a_typed_enqueued_at_label_is_the_users_and_not_read_as_enqueue_time() -> None:
    import time

    from taskiq.labels import LabelType
    from taskiq.receiver import Receiver

    broker, _, reg, _ = make()
    define_tasks(broker)
    await broker.startup()
    # Set through .with_labels(enqueued_at=<float>): taskiq records its type; our pre_send never did.
    raw = _queued_by_an_old_version(
        {LEGACY_ENQUEUED_AT_LABEL: str(time.time() - 30.0)}, {LEGACY_ENQUEUED_AT_LABEL: LabelType.FLOAT.value}
    )
    await Receiver(broker, run_startup=False).callback(raw)
    assert value(reg, "taskiq_tasks_started_total", task_name="ok") == 1
    assert value(reg, "taskiq_task_queue_wait_seconds_count", task_name="ok") == 0
    await broker.shutdown()


async def test_a_duck_typed_sink_still_gets_the_broker_and_the_events() -> None:
    class Duck:
        """Not an EventSink subclass: the interface by shape, as earlier versions allowed."""

        def __init__(self) -> None:
            self.events: list[TaskEvent] = []
            self.broker: Any = None

        def attach_broker(self, broker: Any) -> None:
            self.broker = broker

        def emit(self, event: TaskEvent) -> None:
            self.events.append(event)

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

    duck = Duck()
    registry = CollectorRegistry()
    monitor = MonitoringMiddleware(Settings(), registry=registry, sinks=[duck])
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor)
    tasks = define_tasks(broker)
    await broker.startup()
    await (await tasks["ok"].kiq(1)).wait_result()
    assert duck.broker is broker
    assert [e.status for e in duck.events] == ["running", "success", "pending"]
    await broker.shutdown()


# -- issue 11 part 3: sinks that build events in their own thread get handles; short attempts coalesce --------------


def broker_with(*sinks: EventSink, settings: Settings | None = None) -> AsyncBroker:
    monitor = MonitoringMiddleware(settings or Settings(), registry=CollectorRegistry(), sinks=list(sinks))
    return InMemoryBroker(await_inplace=True).with_middlewares(monitor)


def make_deferred(settings: Settings | None = None) -> tuple[AsyncBroker, HandleSink]:
    sink = HandleSink()
    broker = broker_with(sink, settings=settings)

    @broker.task(task_name="login")
    async def login(user: str, password: str, fail: bool = False, context: Context = TaskiqDepends()) -> None:
        if fail:
            raise PermissionError(f"denied for password={password}")

    return broker, sink


async def test_a_deferred_sink_gets_handles_and_no_event_is_built_on_the_loop() -> None:
    broker, sink = make_deferred()
    login = broker.find_task("login")
    assert login is not None
    await broker.startup()
    await login.kiq("ann", password="hunter2")
    await login.kiq("bob", password="hunter3", fail=True)
    # pending: sent from here, built on the loop as always; running and final: handles
    expected = [StartedAttempt, FinishedAttempt, TaskEvent] * 2
    assert len(sink.items) == len(expected)
    assert all(isinstance(item, kind) for item, kind in zip(sink.items, expected, strict=True)), sink.items
    handles = [item for item in sink.items if not isinstance(item, TaskEvent)]
    assert all(handle._event is None for handle in handles)  # nothing built, nothing redacted yet
    # The sinks' threads then resolve them: each running handle finished before it was taken, so it is coalesced,
    # and its final event carries what the running event would have.
    events = [resolve(item) for item in sink.items]
    assert events[0] is None and events[3] is None
    success, failed = events[1], events[4]
    assert success is not None and failed is not None
    assert (success.status, success.args, success.kwargs["password"]) == ("success", ["ann"], "[REDACTED]")
    assert success.started_at == handles[0].started_at and success.queue_wait_seconds is not None
    assert success.duration_seconds is not None and success.finished_at == success.timestamp
    assert (failed.status, failed.error_type, failed.args) == ("failed", "PermissionError", ["bob"])
    assert failed.error_message == "denied for password=***" and "hunter3" not in (failed.traceback or "")
    assert "hunter" not in record_json(success) + record_json(failed)


async def test_without_coalescing_a_deferred_sink_gets_every_state_change_redacted_once() -> None:
    broker, sink = make_deferred(Settings(events_coalesce=False))
    login = broker.find_task("login")
    assert login is not None
    await broker.startup()
    await login.kiq("ann", password="hunter2")
    running, success = resolve(sink.items[0]), resolve(sink.items[1])
    assert running is not None and success is not None
    assert (running.status, success.status) == ("running", "success")
    assert running.kwargs["password"] == "[REDACTED]"
    assert success.kwargs is running.kwargs  # the attempt's parameters, redacted once


async def test_a_running_handle_taken_while_its_task_runs_is_a_running_event_whatever_the_setting() -> None:
    sink = HandleSink()
    broker = broker_with(sink)
    taken: list[Any] = []

    @broker.task(task_name="work")
    async def work(token: str) -> None:
        taken.append(resolve(sink.items[-1]))  # what a sink's thread does when it takes the handle now

    await broker.startup()
    await work.kiq(token="s3cret")
    running, success = taken[0], resolve(sink.items[1])
    assert running is not None and running.status == "running" and running.kwargs == {"token": "[REDACTED]"}
    assert success is not None and success.status == "success" and success.kwargs is running.kwargs
    assert resolve(sink.items[0]) is running  # built once, whoever asks


async def test_any_sink_that_is_not_deferred_makes_the_loop_build_events_for_all() -> None:
    deferred, plain = HandleSink(), RecordingSink()
    broker = broker_with(deferred, plain)

    @broker.task(task_name="ok")
    async def ok() -> None:
        pass

    await broker.startup()
    await ok.kiq()
    assert all(isinstance(item, TaskEvent) for item in deferred.items)
    assert [e.status for e in deferred.items] == [e.status for e in plain.events] == ["running", "success", "pending"]


class RefusingFinalSink(HandleSink):
    """A deferred sink whose queue is full when an attempt's final handle comes (what a full buffer does)."""

    def emit(self, event: QueuedEvent) -> None:
        if isinstance(event, FinishedAttempt):
            event.refused = True
            return
        super().emit(event)


async def test_a_final_handle_a_sink_could_not_queue_leaves_the_running_event_to_be_recorded() -> None:
    refusing, accepting = RefusingFinalSink(), HandleSink()
    broker = broker_with(accepting, refusing)

    @broker.task(task_name="ok")
    async def ok() -> None:
        pass

    await broker.startup()
    await ok.kiq()
    started = refusing.items[0]
    assert isinstance(started, StartedAttempt) and not started.done
    # Not coalesced: the attempt keeps its running event where the final one was lost (counted there as dropped).
    running = resolve(started)
    assert running is not None and running.status == "running"
    final = resolve(accepting.items[1])
    assert final is not None and final.status == "success"


async def test_a_queued_handle_does_not_keep_the_tasks_exception_and_its_frames_alive() -> None:
    import gc
    import types

    sink = HandleSink()
    broker = broker_with(sink)

    @broker.task(task_name="boom")
    async def boom(password: str) -> None:
        raise ValueError("boom")

    await broker.startup()
    await boom.kiq(password="hunter2")
    started, finished = sink.items[0], sink.items[1]
    assert isinstance(started, StartedAttempt) and isinstance(finished, FinishedAttempt)
    assert finished.error_type == "ValueError" and "boom" in (finished.traceback or "")
    # Everything the queued handles keep alive: no exception, traceback or frame (whose locals could hold anything).
    seen: set[int] = set()
    todo: list[Any] = [started, finished]
    while todo:
        obj = todo.pop()
        # Not into the context all handles share (the middleware, its broker, the result backend holding the error).
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType | EventContext):
            continue
        seen.add(id(obj))
        assert not isinstance(obj, BaseException | types.TracebackType | types.FrameType), obj
        todo.extend(gc.get_referents(obj))


def test_events_carry_the_pid_of_the_process_that_ran_the_task_after_a_fork() -> None:
    """Worker processes are forked from a parent that imported this package: the pid is not the parent's."""
    import os

    from taskiq import TaskiqMessage, TaskiqResult

    sinks = [HandleSink(), RecordingSink()]  # handles (deferred) and events built on the loop
    middlewares = [MonitoringMiddleware(Settings(), registry=CollectorRegistry(), sinks=[s]) for s in sinks]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            pids = []
            for middleware, sink in zip(middlewares, sinks, strict=True):
                message = TaskiqMessage(task_id="t", task_name="ok", labels={}, args=[], kwargs={})
                middleware.pre_execute(message)
                middleware.post_execute(message, TaskiqResult(is_err=False, return_value=None, execution_time=0.1))
                built = [resolve(i) for i in sink.items] if isinstance(sink, HandleSink) else sink.events
                pids += [e.pid for e in built if e is not None]
            os.write(write, ",".join(map(str, pids)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        reported = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pids = [int(p) for p in reported.split(",")]
    assert len(pids) >= 3 and set(pids) == {child} and child != os.getpid()


def test_an_in_flight_record_sets_every_field_a_started_attempt_sets() -> None:
    """An in-flight record is the attempt's handle: it has every field a StartedAttempt of the attempt has."""
    from taskiq_monitor.events import StartedAttempt
    from taskiq_monitor.middleware import _InFlight

    started = StartedAttempt("t", "task", 2, 10.0, 9.0, 1.0)
    record = _InFlight(1, "t", "task", 2, 5.0, 10.0, 9.0, 1.0)
    fields = {name for name in StartedAttempt.__slots__ if hasattr(started, name)}
    assert fields and all(getattr(record, name) == getattr(started, name) for name in fields)


def test_the_handle_handed_to_deferred_sinks_has_every_field_defer_sets() -> None:
    """The handle pre_execute hands to deferred sinks has every field StartedAttempt.defer() sets, with its values."""
    from taskiq import TaskiqMessage

    from taskiq_monitor.events import EventContext, StartedAttempt
    from taskiq_monitor.redaction import Redactor

    started = StartedAttempt("t", "task", 1, 10.0, None, None)
    before = {name for name in StartedAttempt.__slots__ if hasattr(started, name)}
    started.defer(EventContext(Redactor(), lambda _: (), None, True), "h", 1, [], {}, {}, None, None)
    set_by_defer = {name for name in StartedAttempt.__slots__ if hasattr(started, name)} - before | {"_context"}
    sink = HandleSink()
    middleware = MonitoringMiddleware(Settings(), registry=CollectorRegistry(), sinks=[sink])
    middleware.pre_execute(TaskiqMessage(task_id="t", task_name="task", labels={"a": 1}, args=[1], kwargs={"k": 2}))
    (handle,) = sink.items
    assert len(set_by_defer) >= 8 and all(hasattr(handle, name) for name in set_by_defer)
    assert (handle.args, handle.kwargs, handle.labels) == ([1], {"k": 2}, {"a": 1})
    assert handle._context is middleware._context


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("monitor_first", [True, False])
async def test_final_events_carry_the_labels_their_attempt_started_with(deferred: bool, monitor_first: bool) -> None:
    # SimpleRetryMiddleware bumps ``_retries`` in the running message's labels before post_execute: attempt 1's final
    # event used to say _retries=1, attempt 2's 2.
    sink: EventSink = HandleSink() if deferred else RecordingSink()
    monitor = MonitoringMiddleware(Settings(), registry=CollectorRegistry(), sinks=[sink])
    retry = SimpleRetryMiddleware(default_retry_count=3)
    middlewares: list[Any] = [monitor, retry] if monitor_first else [retry, monitor]
    broker = InMemoryBroker(await_inplace=True).with_middlewares(*middlewares)

    @broker.task(task_name="flaky_once", retry_on_error=True)
    async def flaky_once(context: Context = TaskiqDepends()) -> None:
        if RETRIES_LABEL not in context.message.labels:
            raise ConnectionError("first attempt")

    await broker.startup()
    await flaky_once.kiq()
    await broker.wait_all()
    if isinstance(sink, HandleSink):
        built = [resolve(item) for item in sink.items]
        events = [e for e in built if e is not None]
    else:
        events = sink.events
    finished = {e.attempt: e for e in events if e.status in ("retried", "success", "failed")}
    assert {a: e.status for a, e in finished.items()} == {1: "retried", 2: "success"}
    assert int(finished[1].labels.get(RETRIES_LABEL, 0)) == 0
    assert int(finished[2].labels[RETRIES_LABEL]) == 1
    for event in events:  # every event of an attempt agrees with its attempt number
        assert int(event.labels.get(RETRIES_LABEL, 0)) == event.attempt - 1, event.status
    await broker.shutdown()
