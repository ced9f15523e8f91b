from __future__ import annotations

import logging

import pytest

from taskiq_monitor.logs import Outage, WarnOnce, describe, redis_target


def test_each_kind_warns_once_then_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.warn_once")
    warn = WarnOnce(logging.getLogger("test.warn_once"))
    for _ in range(3):
        warn("spool", "spool %s unusable", "/x")
    warn("queue_full", "queue full")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "spool /x unusable"),
        (logging.DEBUG, "spool /x unusable"),
        (logging.DEBUG, "spool /x unusable"),
        (logging.WARNING, "queue full"),
    ]


# -- Outage --------------------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused() -> Exception:
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:  # raised and chained as redis-py does, so a traceback (and its cause) would be there to print
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.") from exc
    except RedisConnectionError as exc:
        return exc


def _outage(caplog: pytest.LogCaptureFixture, clock: _Clock) -> Outage:
    caplog.set_level(logging.DEBUG, logger="test.outage")
    return Outage(logging.getLogger("test.outage"), "comp", "Redis at 127.0.0.1:1/0", clock=clock)


def _at(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level]


def test_an_outage_warns_once_with_cause_and_address_then_debug_then_one_recovery_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    outage = _outage(caplog, clock)
    outage.recovered()  # nothing was down: nothing logged
    assert caplog.records == []
    for _ in range(50):
        outage.failed(_refused())
        clock.now += 0.5  # 25 s in all: under the reminder interval
    warnings = _at(caplog, logging.WARNING)
    assert [r.getMessage() for r in warnings] == [
        "comp: Redis at 127.0.0.1:1/0 is unavailable (ConnectionError: Error 111 connecting to 127.0.0.1:1. "
        "Connection refused.); retrying, quietly until it is back"
    ]
    assert warnings[0].exc_info is None  # a connection error's traceback says nothing the cause does not
    debug = _at(caplog, logging.DEBUG)
    assert len(debug) == 50 and all(r.exc_info for r in debug)  # every failure, with its traceback, at debug
    assert outage.down and outage.failures == 50
    clock.now += 17
    outage.recovered()
    outage.recovered()
    assert [r.getMessage() for r in _at(caplog, logging.INFO)] == [
        "comp: Redis at 127.0.0.1:1/0 reachable again after 42 s (50 failed attempts)"
    ]
    assert not outage.down
    outage.failed(_refused())  # a new outage is a new warning
    assert len(_at(caplog, logging.WARNING)) == 2


def test_a_long_outage_is_reminded_once_per_interval_with_its_duration(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    outage = _outage(caplog, clock)
    for _ in range(300):  # 5 minutes, a failure a second
        outage.failed(_refused())
        clock.now += 1
    warnings = [r.getMessage() for r in _at(caplog, logging.WARNING)]
    assert len(warnings) == 5, warnings  # the first, then one a minute
    assert warnings[1].startswith("comp: Redis at 127.0.0.1:1/0 still unavailable after 60 s (61 failed attempts;")
    assert warnings[4].startswith("comp: Redis at 127.0.0.1:1/0 still unavailable after 4 min (241 failed")
    assert "last: ConnectionError: Error 111" in warnings[4]


def test_an_unexpected_error_is_warned_with_its_traceback_once_per_type(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    outage = _outage(caplog, clock)
    outage.failed(_refused())
    for _ in range(3):
        outage.failed(KeyError("state"))  # a bug: its traceback is what a report needs
    warnings = _at(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert warnings[1].getMessage() == "comp: Redis at 127.0.0.1:1/0 failed (KeyError: 'state'); retrying"
    assert warnings[1].exc_info is not None and warnings[1].exc_info[0] is KeyError


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6380/2", "Redis at 127.0.0.1:6380/2"),
        ("redis://user:s3cret@redis.internal", "Redis at redis.internal:6379/0"),
        ("rediss://default:s3cret@[::1]:7000/1", "Redis at [::1]:7000/1 (TLS)"),
        ("redis://h:1?db=3", "Redis at h:1/3"),
        ("unix://:s3cret@/run/redis.sock?db=4", "Redis at unix:/run/redis.sock?db=4"),
        (None, "the in-process store"),
    ],
)
def test_redis_target_names_the_address_and_never_the_password(url: str | None, shown: str) -> None:
    assert redis_target(url) == shown


def test_describe_gives_type_and_message_on_one_line_without_url_credentials() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    text = describe(ValueError("cannot use\nredis://u:s3cret@h:1/0 now"))
    assert text == "ValueError: cannot use redis://h:1/0 now"
    assert len(describe(ValueError("x" * 10_000))) < 400
