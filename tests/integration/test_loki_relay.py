"""The exporter's Loki relay (``loki_shipper=exporter``) against a real redis-server and the Loki push double.

Events are written to Redis by the state sink's own encoding and writer (the worker's flusher path); the relay
reads them from the stream and pushes them to the double.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.events import TaskEvent
from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.loki_relay import GROUP, LokiRelay, _text, timestamp_ns
from taskiq_monitor.settings import Settings, load_settings
from taskiq_monitor.sinks import default_sinks
from taskiq_monitor.sinks.loki import LokiSink
from taskiq_monitor.sinks.loki.format import EntryEncoder
from taskiq_monitor.sinks.state import StateSink
from tests.integration.redis_events import finished, write_events
from tests.integration.servers import PYTHONPATH, RedisServer, stop, wait_for
from tests.loki_double import LokiPushDouble


@pytest.fixture
def loki() -> Iterator[LokiPushDouble]:
    double = LokiPushDouble()
    yield double
    double.close()


def settings(redis: RedisServer, loki: LokiPushDouble, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis.url,
        "loki_url": loki.url,
        "loki_shipper": "exporter",
        "loki_batch_wait_seconds": 0.1,
        "loki_backoff_initial_seconds": 0.05,
        "loki_backoff_max_seconds": 0.2,
        "service_name": "relay-test",
        "env": "ci",
    }
    values.update(kw)
    return Settings(**values)


def event(i: int, status: str = "success", task: str = "tasks:score", **kw: Any) -> TaskEvent:
    return finished(i, time.time() - 5, task, status, **kw)


def relay_of(conf: Settings, **kw: Any) -> LokiRelay:
    relay = LokiRelay(conf, **kw)
    relay.start()
    # The group is created by the first write of workers configured for the relay, or else on the relay's first read.
    wait_for(lambda: relay._client.exists(relay.stream) == 1 and _has_group(relay), 10, "the relay's group")
    return relay


def _has_group(relay: LokiRelay) -> bool:
    return any(g["name"] == b"loki" for g in relay._client.xinfo_groups(relay.stream))


def relay_pending(relay: LokiRelay) -> int:
    return int(relay._client.xpending(relay.stream, "loki")["pending"])


def ids_arrived(loki: LokiPushDouble) -> Counter[tuple[str, str]]:
    return Counter((tid, status) for tid, status, _ in loki.record_keys())


def test_relay_pushes_exactly_what_the_workers_sink_would(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    conf = settings(redis_srv, loki)
    events = [event(0), event(1, "failed", trace_id="ab" * 16, span_id="cd" * 8), event(2, "running")]
    relay = relay_of(conf)
    try:
        write_events(conf, events)
        wait_for(lambda: len(loki.entries) == 3, 20, "three entries in Loki")
        # Counted before acknowledged: a stop between Loki's answer and the count would leave the batch pending.
        wait_for(lambda: relay_pending(relay) == 0, 20, "all acknowledged")
    finally:
        relay.stop()
    encoder = EntryEncoder(conf.service_name, conf.env)
    # The worker's LokiSink pushes encoder.entry(event) for each: same labels, line and metadata; the timestamp is
    # the record's (microseconds), which the worker's float arithmetic may round one microsecond apart.
    want = {(e.task_id, e.status): encoder.entry(e)[0] for e in events}
    for got in loki.entries:
        labels, ts, line, metadata = want[(got.record["task_id"], got.record["status"])]
        assert (dict(got.labels), got.line, dict(got.metadata)) == (dict(labels), line, metadata)
        assert abs(int(got.ts) - int(ts)) <= 1000
    failed = next(e for e in loki.entries if e.record["status"] == "failed")
    assert dict(failed.metadata)["trace_id"] == "ab" * 16
    assert relay.shipped == 3


def test_statuses_outside_loki_statuses_are_acknowledged_not_pushed(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    conf = settings(redis_srv, loki, loki_statuses="failed")
    relay = relay_of(conf)
    try:
        write_events(conf, [event(0), event(1, "failed"), event(2, "running")])
        wait_for(lambda: relay._client.xinfo_groups(relay.stream)[0]["lag"] == 0, 20, "all read")
        wait_for(lambda: relay_pending(relay) == 0, 20, "all acknowledged")
    finally:
        relay.stop()
    assert [e.record["status"] for e in loki.entries] == ["failed"]


def test_loki_outage_loses_nothing_and_pushes_nothing_twice(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    conf = settings(redis_srv, loki)
    relay = relay_of(conf)
    try:
        loki.set_mode("503")
        write_events(conf, [event(i) for i in range(300)])
        wait_for(lambda: loki.stats.by_status.get(503, 0) >= 3, 20, "pushes refused during the outage")
        loki.set_mode("down")
        write_events(conf, [event(i) for i in range(300, 600)])
        time.sleep(0.5)
        loki.set_mode("ok")
        wait_for(lambda: len(loki.entries) == 600, 30, "every record after the outage")
    finally:
        relay.stop()
    assert loki.duplicates == 0
    assert relay.dropped == 0
    assert sorted(ids_arrived(loki).values()) == [1] * 600


def test_two_exporters_share_the_stream_each_record_once(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    conf = settings(redis_srv, loki, loki_batch_max_records=50)
    first, second = relay_of(conf, consumer="exporter-a"), relay_of(conf, consumer="exporter-b")
    try:
        for start in range(0, 2000, 100):
            write_events(conf, [event(i) for i in range(start, start + 100)])
        wait_for(lambda: len(loki.entries) == 2000, 30, "2000 records")
        wait_for(lambda: relay_pending(first) == 0, 20, "all acknowledged")
    finally:
        first.stop()
        second.stop()
    assert loki.duplicates == 0
    assert first.shipped + second.shipped == 2000
    assert first.shipped > 0 and second.shipped > 0, (first.shipped, second.shipped)


def test_a_dead_exporters_unacknowledged_records_are_taken_over(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    conf = settings(redis_srv, loki)
    dead = LokiRelay(conf, consumer="exporter-dead")
    dead._read(1)  # creates the group
    write_events(conf, [event(i) for i in range(20)])
    assert len(dead._read(100)) == 20  # read, never pushed nor acknowledged: it "died" here
    heir = relay_of(conf, consumer="exporter-heir", claim_idle_seconds=0.3)
    try:
        wait_for(lambda: len(loki.entries) == 20, 20, "the dead exporter's records")
    finally:
        heir.stop()
    assert relay_pending(heir) == 0
    assert loki.duplicates == 0


def consumers(relay: LokiRelay) -> set[str]:
    return {_text(c["name"]) for c in relay._client.xinfo_consumers(relay.stream, GROUP)}


def test_killed_exporters_are_forgotten_by_the_group_once_their_records_are_taken_over(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    # A killed exporter's consumer (host:pid) stayed in the group for good, and a restarted exporter is a new one.
    conf = settings(redis_srv, loki)
    holding, idle = LokiRelay(conf, consumer="exporter-holding"), LokiRelay(conf, consumer="exporter-idle")
    write_events(conf, [event(0)])
    [(first, _)] = idle._read(1)
    idle._client.xack(idle.stream, GROUP, first)  # shipped and acknowledged it: holds nothing; then "killed"
    write_events(conf, [event(i) for i in range(1, 21)])
    assert len(holding._read(100)) == 20  # read, never acknowledged; then "killed"
    assert consumers(idle) == {"exporter-holding", "exporter-idle"}
    heir = relay_of(conf, consumer="exporter-heir", claim_idle_seconds=0.3)
    try:
        wait_for(lambda: len(loki.entries) == 20, 20, "the killed exporter's records")
        wait_for(lambda: consumers(heir) == {"exporter-heir"}, 20, "the killed exporters forgotten")
        write_events(conf, [event(i) for i in range(21, 26)])
        wait_for(lambda: len(loki.entries) == 25, 20, "records after the pruning")
    finally:
        heir.stop()
    assert loki.duplicates == 0
    assert (heir.shipped, heir.dropped) == (25, 0)


def test_a_dead_consumer_still_holding_records_and_a_live_one_are_not_forgotten(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    # A takeover moves at most a read's count of records at a time: a dead consumer that still holds more must stay,
    # or the rest of its records would leave the group's pending list unshipped.
    conf = settings(redis_srv, loki)
    holder = LokiRelay(conf, consumer="exporter-holder")
    holder._read(1)  # creates the group
    write_events(conf, [event(i) for i in range(30)])
    assert len(holder._read(100)) == 30  # then "killed"
    heir = LokiRelay(conf, consumer="exporter-heir", claim_idle_seconds=0.3)
    peer = LokiRelay(conf, consumer="exporter-peer", claim_idle_seconds=3600)
    try:
        time.sleep(0.6)
        # A live exporter that has just shipped and acknowledged what it read: it holds nothing, and stays.
        write_events(conf, [event(30)])
        [(entry_id, _)] = peer._read(1)
        peer._client.xack(peer.stream, GROUP, entry_id)
        assert len(heir._read(10)) == 10  # taken over: ten of thirty, and the dead consumers passed over
        assert consumers(heir) == {"exporter-holder", "exporter-heir", "exporter-peer"}
        pending = {_text(c["name"]): c["pending"] for c in heir._client.xinfo_consumers(heir.stream, GROUP)}
        assert pending == {"exporter-holder": 20, "exporter-heir": 10, "exporter-peer": 0}
    finally:
        for relay in (heir, peer, holder):
            relay._client.close()


def test_records_trimmed_before_the_relay_read_them_are_counted_dropped(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    conf = settings(redis_srv, loki, stream_max_events=100)
    relay = relay_of(conf)
    relay.stop()  # the group exists; the exporter is away while 1,000 events are written to a 100-entry stream
    for start in range(0, 1000, 50):
        write_events(conf, [event(i) for i in range(start, start + 50)])
    length = relay._client.xlen(relay.stream)
    assert length < 1000  # trimmed (MAXLEN ~: whole nodes, so about the cap)
    back = relay_of(conf)
    try:
        wait_for(lambda: back.shipped + back.dropped == 1000, 20, "every record shipped or counted")
    finally:
        back.stop()
    assert back.shipped == length == len(loki.entries)
    assert back.dropped == 1000 - length


def test_a_record_loki_rejects_is_dropped_alone(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    conf = settings(redis_srv, loki)
    relay = relay_of(conf)
    try:
        loki.set_mode("poison")
        write_events(conf, [event(i, task=loki.poison_marker if i == 7 else "tasks:score") for i in range(40)])
        wait_for(lambda: relay.shipped + relay.dropped == 40, 20, "40 records shipped or dropped")
    finally:
        relay.stop()
    assert (relay.shipped, relay.dropped) == (39, 1)
    assert f"{7:032x}" not in {e.record["task_id"] for e in loki.entries}
    assert relay_pending(relay) == 0


def test_workers_configured_for_the_exporter_do_not_ship(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    sinks = default_sinks(settings(redis_srv, loki))
    assert [type(s) for s in sinks] == [StateSink]
    for sink in sinks:
        sink.stop()  # type: ignore[attr-defined]
    worker_side = default_sinks(settings(redis_srv, loki, loki_shipper="worker"))
    assert LokiSink in [type(s) for s in worker_side]
    for sink in worker_side:
        if isinstance(sink, LokiSink):
            sink.flush_sync(0)
        else:
            sink.stop()  # type: ignore[attr-defined]


def test_exporter_shipping_without_redis_is_a_clear_configuration_error(loki: LokiPushDouble) -> None:
    with pytest.raises(ConfigError, match="loki_shipper=exporter needs redis_url"):
        load_settings(loki_url=loki.url, loki_shipper="exporter")


def test_the_exporter_app_runs_the_relay_and_exposes_its_counts(
    redis_srv: RedisServer, loki: LokiPushDouble, tmp_path: Path
) -> None:
    # An exporter of a workers' directory (here empty: the workers ship nothing to Loki themselves).
    conf = settings(redis_srv, loki, metrics_dir=tmp_path)
    app = create_app(conf)
    with TestClient(app) as http:
        relay: LokiRelay = app.state.loki_relay
        wait_for(lambda: relay.alive and _has_group(relay), 10, "the relay's group")
        write_events(conf, [event(i) for i in range(5)])
        wait_for(lambda: len(loki.entries) == 5, 20, "five records")
        body = http.get("/metrics").text
    assert 'taskiq_monitor_log_records_total{result="shipped"} 5.0' in body
    assert 'taskiq_monitor_log_records_total{result="dropped"} 0.0' in body
    assert body.count("# TYPE taskiq_monitor_log_records_total counter") == 1
    assert not relay.alive  # stopped with the app


def test_timestamp_ns_reads_the_records_rfc3339() -> None:
    assert timestamp_ns("2026-11-28T23:44:22.988142Z") == 1_795_909_462_988_142_000
    assert timestamp_ns("2026-11-28T23:44:22Z") is None
    assert timestamp_ns("2026-13-28T23:44:22.988142Z") is None
    assert timestamp_ns(None) is None


def restart_empty(redis: RedisServer) -> None:
    """Redis restarted without persistence: same port, nothing of before (no dump is reloaded)."""
    redis.stop()
    for dump in redis.dir.glob("*.rdb"):
        dump.unlink()
    redis.start()
    assert redis.client().dbsize() == 0


def unconfigured(conf: Settings) -> Settings:
    """The settings of workers that ship to Loki themselves: they write the stream without the relay's group."""
    return conf.model_copy(update={"loki_shipper": "worker"})


def ship_five_then_hold_one(conf: Settings, relay: LokiRelay, loki: LokiPushDouble) -> None:
    """Records 0-4 shipped; then Loki refuses (503) and the relay holds record 5's batch, reading nothing more."""
    write_events(conf, [event(i) for i in range(5)])
    wait_for(lambda: len(loki.entries) == 5, 20, "five records shipped")
    loki.set_mode("503")
    write_events(conf, [event(5)])
    wait_for(lambda: loki.stats.by_status.get(503, 0) >= 1 and relay.in_hand == 1, 20, "the batch held")


def test_records_written_between_a_redis_reset_and_the_relays_next_read_are_shipped(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    conf = settings(redis_srv, loki)
    relay = relay_of(conf)
    try:
        # Loki refuses: the relay holds its batch and reads nothing, so the workers re-create the stream after the
        # reset before the relay's next read (the race of a 50 ms poll, made certain).
        ship_five_then_hold_one(conf, relay, loki)
        restart_empty(redis_srv)
        # Written by workers not configured for the relay, which do not create its group with the stream: the
        # relay's own recovery ships them (workers configured for it: test_records_workers_wrote_before_any_...).
        write_events(unconfigured(conf), [event(i) for i in range(6, 106)])
        loki.set_mode("ok")
        wait_for(lambda: len(loki.entries) == 106, 30, "every record, before and after the reset")
        wait_for(lambda: relay_pending(relay) == 0, 20, "all acknowledged")
    finally:
        relay.stop()
    assert sorted(ids_arrived(loki).values()) == [1] * 106
    assert loki.duplicates == 0
    assert (relay.shipped, relay.dropped) == (106, 0)


def test_two_exporters_after_a_redis_reset_ship_each_new_record_once(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    conf = settings(redis_srv, loki, loki_batch_max_records=10)
    first, second = relay_of(conf, consumer="exporter-a"), relay_of(conf, consumer="exporter-b")
    try:
        loki.set_mode("503")
        write_events(conf, [event(i) for i in range(100)])
        wait_for(lambda: first.in_hand == 10 and second.in_hand == 10, 20, "both exporters holding a batch")
        restart_empty(redis_srv)
        # The 80 records not in hand were in Redis only: gone with it. The 20 in hand, and all written after the
        # reset (by workers that do not create the group: the relays' own recovery), must arrive, once.
        write_events(unconfigured(conf), [event(i) for i in range(1000, 1500)])
        loki.set_mode("ok")
        wait_for(lambda: len(loki.entries) == 520, 30, "the held batches and every record after the reset")
        wait_for(lambda: relay_pending(first) == 0, 20, "all acknowledged")
    finally:
        first.stop()
        second.stop()
    arrived = ids_arrived(loki)
    assert all(arrived[(f"{i:032x}", "success")] == 1 for i in range(1000, 1500))
    assert loki.duplicates == 0
    assert first.shipped + second.shipped == 520
    assert first.dropped + second.dropped == 0


def test_after_a_reset_records_with_ids_below_the_old_ones_are_shipped(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    # Stream ids are Redis's clock: a Redis that comes back on a host whose clock is behind (a failover) numbers the
    # new records below the last id the group had delivered. They are new all the same.
    conf = settings(redis_srv, loki)
    relay = relay_of(conf)
    try:
        ship_five_then_hold_one(conf, relay, loki)
        restart_empty(redis_srv)
        client = redis_srv.client()
        fresh = [event(i) for i in range(6, 9)]
        write_events(conf, fresh)
        fresh_fields = [fields for _, fields in client.xrange(relay.stream)]  # as the workers encode them
        client.delete(relay.stream)
        for n, fields in enumerate(fresh_fields, 1):
            client.xadd(relay.stream, fields, id=f"1-{n}")
        loki.set_mode("ok")
        wait_for(lambda: len(loki.entries) == 9, 30, "every record")
        wait_for(lambda: relay_pending(relay) == 0, 20, "all acknowledged")
    finally:
        relay.stop()
    assert loki.duplicates == 0
    assert (relay.shipped, relay.dropped) == (9, 0)


def test_a_group_removed_from_a_kept_stream_resumes_after_what_it_had_delivered(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    conf = settings(redis_srv, loki)
    relay = relay_of(conf)
    try:
        ship_five_then_hold_one(conf, relay, loki)
        # The stream stays (a restore, an operator's XGROUP DESTROY): its records already shipped are not again.
        redis_srv.client().xgroup_destroy(relay.stream, "loki")
        write_events(conf, [event(i) for i in range(6, 56)])
        loki.set_mode("ok")
        wait_for(lambda: len(loki.entries) == 56, 30, "every record")
        wait_for(lambda: relay_pending(relay) == 0, 20, "all acknowledged")
    finally:
        relay.stop()
    assert loki.duplicates == 0
    assert (relay.shipped, relay.dropped) == (56, 0)


def test_a_new_group_says_how_many_records_it_leaves_behind(
    redis_srv: RedisServer, loki: LokiPushDouble, caplog: pytest.LogCaptureFixture
) -> None:
    conf = settings(redis_srv, loki)
    # Written before the switch to loki_shipper=exporter, by workers that shipped to Loki themselves.
    write_events(conf.model_copy(update={"loki_shipper": "worker"}), [event(i) for i in range(3)])
    caplog.set_level(logging.INFO, logger="taskiq_monitor.service.loki_relay")
    relay = relay_of(conf)
    try:
        write_events(conf, [event(3)])
        wait_for(lambda: len(loki.entries) == 1, 20, "the record written after the group")
        wait_for(lambda: relay_pending(relay) == 0, 20, "acknowledged")
    finally:
        relay.stop()
    assert "the Loki relay starts at the end of the event stream: 3 events already in it are not shipped" in (
        caplog.text
    )
    assert (relay.shipped, relay.dropped) == (1, 0)


def test_records_workers_wrote_before_any_exporter_ran_are_shipped_after_a_reset_too(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    # Workers configured for the relay create its group with the stream: a first deployment, or a Redis restarted
    # empty while no exporter ran, ships what the workers wrote before the first exporter started. It used to start
    # at the end of the stream, and those records never reached Loki.
    conf = settings(redis_srv, loki)
    write_events(conf, [event(i) for i in range(3)])
    relay = relay_of(conf)
    try:
        wait_for(lambda: len(loki.entries) == 3, 20, "the records written before the exporter started")
        wait_for(lambda: relay_pending(relay) == 0, 20, "acknowledged")
    finally:
        relay.stop()
    restart_empty(redis_srv)  # no exporter runs
    write_events(conf, [event(i) for i in range(3, 10)])
    relay = relay_of(conf)
    try:
        wait_for(lambda: len(loki.entries) == 10, 20, "the records written after the reset")
        wait_for(lambda: relay_pending(relay) == 0, 20, "acknowledged")
    finally:
        relay.stop()
    assert sorted(ids_arrived(loki).values()) == [1] * 10
    assert loki.duplicates == 0
    assert (relay.shipped, relay.dropped) == (7, 0)


def test_workers_that_ship_themselves_create_no_relay_group(redis_srv: RedisServer, loki: LokiPushDouble) -> None:
    conf = settings(redis_srv, loki, loki_shipper="worker")
    write_events(conf, [event(0)])
    client = redis_srv.client()
    assert client.xlen(f"{{{conf.state_key_prefix}}}:events") == 1
    assert client.xinfo_groups(f"{{{conf.state_key_prefix}}}:events") == []


# An exporter's relay in a process of its own, to be killed: the settings come as JSON on argv.
RELAY_PROCESS = """
import json, sys, threading
from taskiq_monitor.service.loki_relay import LokiRelay
from taskiq_monitor.settings import Settings
relay = LokiRelay(Settings(**json.loads(sys.argv[1])), consumer=sys.argv[2])
relay.start()
threading.Event().wait()
"""


def test_an_exporter_killed_mid_push_leaves_its_batch_to_another_once(
    redis_srv: RedisServer, loki: LokiPushDouble
) -> None:
    conf = settings(redis_srv, loki)
    values = conf.model_dump(mode="json", include={"redis_url", "loki_url", "loki_shipper", "service_name", "env"})
    values["loki_batch_wait_seconds"] = 0.1
    loki.set_mode("hang")  # the killed exporter's push is in flight, never answered
    proc = subprocess.Popen(
        [sys.executable, "-c", RELAY_PROCESS, json.dumps(values), "exporter-killed"],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    try:
        probe = LokiRelay(conf, consumer="probe")
        wait_for(lambda: probe._client.exists(probe.stream) and _has_group(probe), 20, "the killed one's group")
        write_events(conf, [event(i) for i in range(20)])
        wait_for(lambda: loki.stats.by_status.get(0, 0) >= 1, 20, "the push in flight")
        assert relay_pending(probe) == 20
        assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    finally:
        stop(proc, signal.SIGKILL)
    loki.set_mode("ok")
    heir = relay_of(conf, consumer="exporter-heir", claim_idle_seconds=0.3)
    try:
        wait_for(lambda: len(loki.entries) == 20, 20, "the killed exporter's batch")
        wait_for(lambda: relay_pending(heir) == 0, 20, "all acknowledged")
    finally:
        heir.stop()
        probe.stop()
    assert sorted(ids_arrived(loki).values()) == [1] * 20
    assert loki.duplicates == 0
    assert (heir.shipped, heir.dropped) == (20, 0)
