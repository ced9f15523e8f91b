"""Settings: environment prefix, the multiprocess directory alias, and clear errors for bad values."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.settings import DEFAULT_DURATION_BUCKETS, Settings, load_settings, unknown_variables


def test_defaults_bind_to_loopback() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.bearer_token is None
    assert settings.duration_buckets == DEFAULT_DURATION_BUCKETS
    assert settings.duration_buckets[0] == 0.005 and settings.duration_buckets[-1] == 1800


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_PORT", "9999")
    monkeypatch.setenv("TASKIQ_MONITOR_DURATION_BUCKETS", "[0.1, 1, 10]")
    settings = Settings()
    assert settings.port == 9999
    assert settings.duration_buckets == (0.1, 1.0, 10.0)


def test_a_list_variable_that_is_not_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_DURATION_BUCKETS", "1,2,3")
    with pytest.raises(ConfigError, match=r"duration_buckets.*list values are JSON"):
        load_settings()


@pytest.mark.parametrize("url", ["redis://:hunter2@127.0.0.1:abc/0", "redis://:hunter2@[::1/0", "http://h:99999"])
def test_a_url_with_a_bad_port_or_host_is_a_config_error_that_hides_the_password(url: str) -> None:
    field = "loki_url" if url.startswith("http") else "redis_url"
    with pytest.raises(ConfigError, match=f"{field}: .*not a valid URL") as caught:
        load_settings(**{field: url})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("variable", ["TASKIQ_MONITOR_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR"])
def test_a_blank_metrics_dir_is_unset_not_the_current_directory(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "")
    assert Settings().metrics_dir is None


def _directory_settings() -> list[str]:
    return sorted(name for name, field in Settings.model_fields.items() if "Path" in str(field.annotation))


def test_every_directory_setting_is_found() -> None:
    assert _directory_settings() == ["loki_spool_dir", "metrics_dir"]


@pytest.mark.parametrize("field", _directory_settings())
def test_a_blank_directory_variable_is_unset_not_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    # docs/configuration.md: "An empty URL or directory variable is unset". A blank TASKIQ_MONITOR_LOKI_SPOOL_DIR
    # (an empty value in a compose file or a chart) spooled Loki batches into the worker's working directory.
    monkeypatch.setenv(f"TASKIQ_MONITOR_{field.upper()}", " ")
    assert getattr(Settings(), field) is None


def test_a_misspelled_variable_is_named_with_the_setting_it_resembles(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_BEARERTOKEN", "x")
    monkeypatch.setenv("TASKIQ_MONITOR_REDIS_URL", "redis://localhost:6379/0")  # a real one: not named
    assert unknown_variables({"TASKIQ_MONITOR_BEARERTOKEN": "x", "PROMETHEUS_MULTIPROC_DIR": "/d"}) == [
        "TASKIQ_MONITOR_BEARERTOKEN"
    ]
    with caplog.at_level(logging.WARNING, logger="taskiq_monitor.settings"):
        load_settings()
    assert "TASKIQ_MONITOR_BEARERTOKEN is no setting" in caplog.text
    assert "did you mean TASKIQ_MONITOR_BEARER_TOKEN?" in caplog.text
    assert "TASKIQ_MONITOR_REDIS_URL" not in caplog.text


def test_every_prefixed_variable_of_the_compose_env_file_is_a_setting_or_the_deployments(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A user who exports .env.example's variables into a shell got "TASKIQ_MONITOR_IMAGE_TAG is no setting".
    root = Path(__file__).resolve().parents[1]
    names = [
        line.split("=", 1)[0].strip().removeprefix("export ").strip()
        for line in (root / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    prefixed = {name: "x" for name in names if name.startswith("TASKIQ_MONITOR_")}
    assert "TASKIQ_MONITOR_IMAGE_TAG" in prefixed
    assert unknown_variables(prefixed) == []
    monkeypatch.setenv("TASKIQ_MONITOR_IMAGE_TAG", "0.1.0")
    with caplog.at_level(logging.WARNING, logger="taskiq_monitor.settings"):
        load_settings()
    assert "is no setting" not in caplog.text


def test_metrics_dir_from_prometheus_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert Settings().metrics_dir == tmp_path


@pytest.mark.parametrize("buckets", ["[]", "[1, 0.5]", "[0, 1]", "[1, 1]"])
def test_bad_buckets_rejected(monkeypatch: pytest.MonkeyPatch, buckets: str) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_DURATION_BUCKETS", buckets)
    with pytest.raises(ValidationError, match="strictly increasing"):
        Settings()


def test_bearer_token_is_not_printed() -> None:
    settings = Settings(bearer_token="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_redis_url_without_a_scheme_is_rejected_clearly() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="must be a redis://, rediss:// or unix:// URL"):
        Settings(redis_url="localhost:6379")
    assert Settings(redis_url=" redis://localhost:6379/0 ").redis_url == "redis://localhost:6379/0"
    assert Settings(redis_url="").redis_url is None


def test_loki_statuses_parse_from_a_comma_list_and_bad_ones_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskiq_monitor.errors import ConfigError
    from taskiq_monitor.settings import load_settings

    assert Settings().loki_statuses == ("pending", "running", "success", "failed", "retried")
    monkeypatch.setenv("TASKIQ_MONITOR_LOKI_STATUSES", " Failed, retried,failed ")
    assert Settings().loki_statuses == ("failed", "retried")
    monkeypatch.setenv("TASKIQ_MONITOR_LOKI_STATUSES", "failed,sucess")
    with pytest.raises(ConfigError, match=r"loki_statuses: .*unknown status 'sucess': each must be one of pending"):
        load_settings()
    monkeypatch.setenv("TASKIQ_MONITOR_LOKI_STATUSES", " , ")
    with pytest.raises(ConfigError, match="name at least one of"):
        load_settings()


@pytest.mark.parametrize("setting", ["bearer_token", "loki_bearer_token"])
@pytest.mark.parametrize("token", ["pässwört", "two words", "tab\there", "", "\ud800"])
def test_bearer_token_outside_printable_ascii_is_rejected_without_echoing_it(setting: str, token: str) -> None:
    # A non-ASCII token could log in through POST /api/v1/session but never travel in an Authorization header; an
    # empty Loki token sent a bare "Bearer " that Loki refused, and every record went to the spool.
    from taskiq_monitor.errors import ConfigError
    from taskiq_monitor.settings import load_settings

    with pytest.raises(ConfigError, match=rf"{setting}: .*printable ASCII characters without spaces") as raised:
        load_settings(**{setting: token})
    if token:
        assert token not in str(raised.value)
    assert getattr(load_settings(**{setting: "A-z_0~9!/+="}), setting) is not None


def test_allowed_hosts_parse_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().allowed_hosts == ()
    monkeypatch.setenv("TASKIQ_MONITOR_ALLOWED_HOSTS", " Monitor.Example.com., [::1],*,,monitor.example.com")
    assert Settings().allowed_hosts == ("monitor.example.com", "::1", "*")


@pytest.mark.parametrize("entry", ["https://monitor.example.com", "monitor.example.com:443", "[::1]:80", "a/b"])
def test_allowed_hosts_take_names_only(entry: str) -> None:
    from taskiq_monitor.errors import ConfigError
    from taskiq_monitor.settings import load_settings

    with pytest.raises(ConfigError, match=r"allowed_hosts: .*without scheme, port or path"):
        load_settings(allowed_hosts=entry)


def test_loki_statuses_take_a_json_list_as_the_configuration_reference_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_LOKI_STATUSES", '["failed"]')
    assert load_settings().loki_statuses == ("failed",)
    monkeypatch.setenv("TASKIQ_MONITOR_LOKI_STATUSES", ' [ "Failed", "retried", "failed" ] ')
    assert load_settings().loki_statuses == ("failed", "retried")
    monkeypatch.setenv("TASKIQ_MONITOR_LOKI_STATUSES", '["failed", "sucess"]')
    with pytest.raises(ConfigError, match=r"loki_statuses: .*unknown status 'sucess'"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"a": 1}', "must be a JSON list of strings or comma-separated, not a JSON object"),
        ('"password"', "must be a JSON list of strings or comma-separated, not a JSON string"),
        ("[1, 2]", "must be a JSON list of strings: every item in quotes"),
        ('["password"', "is not valid JSON"),
    ],
)
@pytest.mark.parametrize("setting", ["redact_keys", "loki_statuses"])
def test_a_json_value_that_is_no_list_of_strings_is_rejected_not_taken_as_one_name(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, problem: str
) -> None:
    # '{"a":1}' used to become the one redaction key '{"a":1}': nothing the user meant was redacted.
    monkeypatch.setenv(f"TASKIQ_MONITOR_{setting.upper()}", value)
    with pytest.raises(ConfigError, match=f"{setting}: .*{re.escape(problem)}"):
        load_settings()


def test_redact_keys_still_take_a_json_list_and_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_REDACT_KEYS", '["iban", "pin"]')
    assert load_settings().redact_keys == ("iban", "pin")
    monkeypatch.setenv("TASKIQ_MONITOR_REDACT_KEYS", "iban, pin")
    assert load_settings().redact_keys == ("iban", "pin")


@pytest.mark.parametrize("field", ["grafana_url", "otlp_endpoint", "loki_url"])
def test_http_url_settings_need_a_scheme_and_blank_is_unset(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}: .*must be an http:// or https:// URL"):
        load_settings(**{field: "grafana:3000"})
    with pytest.raises(ConfigError, match=f"{field}: .*not a valid URL") as caught:
        load_settings(**{field: "http://u:hunter2@h:99999"})
    assert "hunter2" not in str(caught.value)
    assert getattr(load_settings(**{field: " https://h:3000/ "}), field) == "https://h:3000"
    assert getattr(load_settings(**{field: "  "}), field) is None


def test_demo_broker_url_needs_a_redis_scheme_and_is_not_repeated() -> None:
    with pytest.raises(ConfigError, match=r"demo_broker_url: .*must be a redis://") as caught:
        load_settings(demo_broker_url="http://u:hunter2@h")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_port_must_be_1_to_65535(port: int) -> None:
    # 0 ("any free port") printed ":0" addresses and made every port-0 supervisor share one metrics directory.
    with pytest.raises(ConfigError, match="port: Input should be"):
        load_settings(port=port)
    assert load_settings(port=1).port == 1 and load_settings(port=65535).port == 65535
