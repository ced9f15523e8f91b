"""Client messages of the live feed: any input gets a reply frame, never an exception (property-based)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from taskiq_monitor.service.broadcast import Client
from taskiq_monitor.service.feed import LiveFeed
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import MemoryStore

REPLY_TYPES = {"pong", "filter", "error"}
_FEED = LiveFeed(Settings(), MemoryStore(Settings()))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
messages = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["filter", "ping", "subscribe"]) | json_values},
        optional={"task_name": json_values, "status": json_values},
    ).map(json.dumps),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


def reply(raw: str) -> dict[str, Any]:
    return asyncio.run(_FEED.handle(raw, Client(10, None, None)))


@settings(max_examples=300, deadline=None)
@given(messages)
def test_any_client_message_gets_a_reply_frame(raw: str) -> None:
    answer = reply(raw)
    assert answer["type"] in REPLY_TYPES
    assert json.loads(json.dumps(answer)) == answer  # serialisable: it is sent as is
    if answer["type"] == "error":
        assert answer["code"] and answer["message"]


def test_deeply_nested_brackets_get_an_invalid_json_error() -> None:
    nested = "[" * 2000 + "]" * 2000  # 4 KB: crashed the connection with RecursionError before
    assert reply(nested) == {"type": "error", "code": "invalid_json", "message": "messages must be JSON objects"}
    deep_type = json.dumps({"type": "x"})[:-1] + ', "task_name": ' + "[" * 500 + "]" * 500 + "}"
    assert reply(deep_type)["type"] == "error"


def test_filter_with_non_string_values_is_rejected() -> None:
    answer = reply(json.dumps({"type": "filter", "status": [["failed"]]}))
    assert answer["code"] == "invalid_message"
    assert reply(json.dumps({"type": "filter", "status": "failed"})) == {
        "type": "filter",
        "task_name": [],
        "status": ["failed"],
    }
