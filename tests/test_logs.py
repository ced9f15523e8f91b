from __future__ import annotations

import logging

import pytest

from taskiq_monitor.logs import WarnOnce


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
