"""The Host check (DNS rebinding) and the live feed's Origin check: which names the exporter answers to."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.hosts import host_allowed, origin_allowed, split_host
from taskiq_monitor.settings import Settings

# The TestClient reports the URL's host as the connection's local address (scope["server"]).
ON_LOOPBACK = "http://127.0.0.1:9808"
ON_LAN = "http://10.1.2.3:9808"


def test_split_host_reads_names_ports_and_ipv6() -> None:
    assert split_host("Example.COM:8080") == ("example.com", 8080)
    assert split_host("localhost.") == ("localhost", None)
    assert split_host("[::1]:9808") == ("::1", 9808)
    assert split_host("[::1]") == ("::1", None)
    for bad in ("", "x:", "x:port", "x:99999", "[::1", "[::1]x"):
        assert split_host(bad) is None, bad


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:9808", "127.0.0.1:9808", "[::1]:9808", "10.1.2.3", "LOCALHOST:1"]
)
def test_loopback_connections_answer_localhost_and_addresses(host: str) -> None:
    assert host_allowed((), host, on_loopback=True)


@pytest.mark.parametrize("host", ["rebind.example", "rebind.example:9808", "localhost.rebind.example", "x:y", ""])
def test_loopback_connections_refuse_other_names(host: str) -> None:
    assert not host_allowed((), host, on_loopback=True)


def test_allowed_hosts_extend_the_names_and_star_allows_any() -> None:
    assert host_allowed(("monitor.example.com",), "Monitor.example.com:443", on_loopback=True)
    assert not host_allowed(("monitor.example.com",), "other.example.com", on_loopback=True)
    assert host_allowed(("*",), "anything.example", on_loopback=True)


def test_other_connections_answer_any_host_unless_allowed_hosts_is_set() -> None:
    assert host_allowed((), "exporter:9808", on_loopback=False)
    assert not host_allowed(("monitor.example.com",), "exporter:9808", on_loopback=False)
    assert host_allowed(("monitor.example.com",), "10.1.2.3:9808", on_loopback=False)  # a scrape by pod IP


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "localhost:9808"),  # not a browser: taskiq-monitor tail, scripts
        ("http://localhost:9808", "localhost:9808"),
        ("http://LOCALHOST:9808", "localhost:9808"),
        ("https://monitor.example.com", "monitor.example.com"),  # default port on one side only
        ("https://monitor.example.com:443", "monitor.example.com"),
        ("http://[::1]:9808", "[::1]:9808"),
    ],
)
def test_an_origin_matching_the_host_may_open_the_feed(origin: str | None, host: str) -> None:
    assert origin_allowed((), origin, host)


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",  # another port of the same host: same-site, the cookie rides along
        "http://127.0.0.1:9808",  # the same server under another name is another origin
        "http://evil.example",
        "null",  # a sandboxed frame or a file:// page
        "http://localhost:99999",
        "",
    ],
)
def test_an_origin_of_another_page_may_not_open_the_feed(origin: str) -> None:
    assert not origin_allowed((), origin, "localhost:9808")


def test_a_listed_origin_may_open_the_feed_by_name_but_star_lists_none() -> None:
    assert origin_allowed(("monitor.example.com",), "https://monitor.example.com", "127.0.0.1:9808")
    assert not origin_allowed(("*",), "https://evil.example", "127.0.0.1:9808")
    assert origin_allowed(("monitor.example.com",), "https://monitor.example.com", None)
    assert not origin_allowed((), "http://localhost:9808", None)  # nothing to match without a Host


def test_get_with_a_rebound_host_on_loopback_is_400_naming_the_setting() -> None:
    with TestClient(create_app(Settings()), base_url=ON_LOOPBACK) as client:
        refused = client.get("/api/v1/ui/config", headers={"Host": "rebind.example:9808"})
        assert refused.status_code == 400
        assert refused.json()["detail"]["error"] == "host_not_allowed"
        assert "TASKIQ_MONITOR_ALLOWED_HOSTS" in refused.json()["detail"]["message"]
        assert client.get("/metrics", headers={"Host": "rebind.example"}).status_code == 400
        assert client.get("/api/v1/ui/config", headers={"Host": "localhost:9808"}).status_code == 200
        assert client.get("/api/v1/ui/config").status_code == 200  # Host: 127.0.0.1:9808
        # Probes name the host as they like; /healthz reveals nothing.
        assert client.get("/healthz", headers={"Host": "exporter.internal"}).status_code == 200


def test_get_with_a_listed_host_on_loopback_is_answered() -> None:
    with TestClient(create_app(Settings(allowed_hosts="monitor.example.com")), base_url=ON_LOOPBACK) as client:
        assert client.get("/api/v1/ui/config", headers={"Host": "monitor.example.com"}).status_code == 200
        assert client.get("/api/v1/ui/config", headers={"Host": "rebind.example"}).status_code == 400


def test_get_on_another_address_answers_any_host_unless_allowed_hosts_is_set() -> None:
    with TestClient(create_app(Settings()), base_url=ON_LAN) as client:
        assert client.get("/api/v1/ui/config", headers={"Host": "exporter:9808"}).status_code == 200
    with TestClient(create_app(Settings(allowed_hosts="monitor.example.com")), base_url=ON_LAN) as client:
        assert client.get("/api/v1/ui/config", headers={"Host": "exporter:9808"}).status_code == 400
        assert client.get("/api/v1/ui/config", headers={"Host": "monitor.example.com"}).status_code == 200
