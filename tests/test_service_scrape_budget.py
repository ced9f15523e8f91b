"""The Redis reads of one scrape: one deadline, and no read after the first failure."""

from __future__ import annotations

import threading

import pytest

from taskiq_monitor.service.scrape_budget import StoreSkipped, read, scrape


def _fail() -> int:
    raise ConnectionError("redis down")


def test_read_after_a_failed_read_of_the_same_scrape_is_skipped() -> None:
    calls: list[str] = []
    with scrape():
        with pytest.raises(ConnectionError):
            read(_fail)
        with pytest.raises(StoreSkipped):
            read(lambda: calls.append("second"))
    assert calls == []  # skipped, never attempted
    with scrape():  # the next scrape tries again
        assert read(lambda: 42) == 42


def test_read_past_the_deadline_times_out_without_waiting_for_the_read() -> None:
    release = threading.Event()
    try:
        with scrape(seconds=0.2):
            with pytest.raises(TimeoutError):
                read(lambda: release.wait(60))
            # The hung read still runs: the scrape stopped waiting for it at the deadline.
            assert not release.is_set()
            with pytest.raises(StoreSkipped):
                read(lambda: 1)
    finally:
        release.set()


def test_reads_of_a_healthy_scrape_share_its_budget() -> None:
    with scrape():
        assert [read(lambda: 1), read(lambda: 2)] == [1, 2]


def test_read_outside_a_scrape_has_a_budget_of_its_own() -> None:
    with pytest.raises(ConnectionError):
        read(_fail)
    assert read(lambda: 3) == 3  # a standalone collect is not skipped by an earlier one
