"""Fixtures shared by the unit, integration and browser tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.servers import RedisServer


@pytest.fixture
def redis_srv() -> Iterator[RedisServer]:
    """A throw-away redis-server of the test's own (free loopback port, stopped by PID)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.cleanup()
