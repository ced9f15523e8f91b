"""Run taskiq's own test suite with ``MonitoringMiddleware`` attached to every broker (``make taskiq-suite``).

    python tools/taskiq_suite/run.py [--position first|last|all] [--sinks default|loki|all] [pytest args...]

The tests come from the sdist of the installed taskiq version (PyPI, through pip), unpacked once into
``.cache/taskiq-suite/``. The plugin ``taskiq_suite_plugin.py`` attaches the middleware and fails the run if it was
never attached, saw no task, or counted an error of its own. The suite's extra test dependencies are in
``requirements.txt`` beside this file (``make taskiq-suite`` installs them).

Deselected: ``tests/scheduler/test_interval_performance.py::test_interval_task_performance`` asserts that a 1 s
interval schedule fires every 0.95–2 s of wall-clock time, which a busy CI machine does not honour with or without
the middleware (seen failing under CPU hogs); it measures the machine, not the middleware.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".cache" / "taskiq-suite"
DESELECT = ["tests/scheduler/test_interval_performance.py::test_interval_task_performance"]


def suite_dir() -> Path:
    """The unpacked sdist of the installed taskiq (downloaded and unpacked on first use)."""
    wanted = version("taskiq")
    target = CACHE / f"taskiq-{wanted}"
    if (target / "tests").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"taskiq-{wanted}.tar.gz"
    if not archive.exists():
        print(f"==> downloading the taskiq {wanted} sdist (its test suite)", flush=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, "--dest", str(CACHE), f"taskiq=={wanted}"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    if not (target / "tests").is_dir():
        raise SystemExit(f"{archive} holds no tests/ directory")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--position", choices=("first", "last", "all"), default="last")
    parser.add_argument("--sinks", choices=("default", "loki", "all"), default="loki")
    args, pytest_args = parser.parse_known_args()
    directory = suite_dir()
    positions = ("first", "last") if args.position == "all" else (args.position,)
    sinks = ("default", "loki") if args.sinks == "all" else (args.sinks,)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    for position in positions:
        for sink in sinks:
            print(f"==> taskiq {version('taskiq')} suite, MonitoringMiddleware {position}, sinks {sink}", flush=True)
            # taskiq's async tests run on anyio's pytest plugin; pytest-asyncio (our dev dependency) stays out.
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio"]
            command += ["-p", "taskiq_suite_plugin"]
            command += [f"--deselect={test}" for test in DESELECT] + pytest_args
            run_env = dict(env, TASKIQ_SUITE_POSITION=position, TASKIQ_SUITE_SINKS=sink)
            code = subprocess.run(command, cwd=directory, env=run_env).returncode
            if code:
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
