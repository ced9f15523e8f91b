"""parentdeath.py: a command started through it gets SIGTERM when its parent dies, even by SIGKILL (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskiq_monitor import parentdeath
from taskiq_monitor.multiproc import _pid_alive
from tests.integration.servers import PYTHONPATH, wait_for

linux_only = pytest.mark.skipif(not parentdeath.supported(), reason="PR_SET_PDEATHSIG is Linux only")
ENV = dict(os.environ, PYTHONPATH=PYTHONPATH)
# A middle process (the supervisor's part): starts a long sleeper through parentdeath, prints its pid, waits.
MIDDLE = (
    "import subprocess, sys, time\n"
    "from taskiq_monitor.parentdeath import exit_with_parent\n"
    "cmd = exit_with_parent([sys.executable, '-c', 'import time; print(\"up\", flush=True); time.sleep(600)'])\n"
    "child = subprocess.Popen(cmd, stdout=subprocess.PIPE)\n"
    "assert child.stdout.readline() == b'up\\n'\n"  # past the exec: it runs the command now
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


@linux_only
def test_the_command_is_terminated_when_its_parent_is_sigkilled() -> None:
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE], env=ENV, stdout=subprocess.PIPE)
    assert middle.stdout is not None
    child = int(middle.stdout.readline())
    try:
        assert _pid_alive(child)
        middle.kill()  # SIGKILL: it can forward nothing
        middle.wait(30)
        wait_for(lambda: not _pid_alive(child), 30, f"pid {child} terminated with its parent")
    finally:
        middle.kill()
        if _pid_alive(child):
            os.kill(child, signal.SIGKILL)


@linux_only
def test_the_command_is_not_started_when_the_parent_is_already_gone(tmp_path: Path) -> None:
    # As when the supervisor died before the wrapper's prctl: the pid it was given is no longer its parent (here
    # this test's pid, while its parent is the middle process below). The command must not run.
    marker = tmp_path / "started"
    wrapper = [sys.executable, "-m", "taskiq_monitor.parentdeath", str(os.getpid()), "/bin/sh", "-c", f"> {marker}"]
    middle = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))", *wrapper]
    done = subprocess.run(middle, env=ENV, timeout=60)
    assert done.returncode == parentdeath.EXIT_PARENT_GONE
    assert not marker.exists()


@linux_only
def test_the_command_runs_with_its_arguments_and_exit_status() -> None:
    cmd = parentdeath.exit_with_parent(["/bin/sh", "-c", "echo $0 $1; exit 3", "a b", "c"])
    assert cmd[:4] == [sys.executable, "-m", "taskiq_monitor.parentdeath", str(os.getpid())]
    done = subprocess.run(cmd, env=ENV, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (3, b"a b c\n")


def test_elsewhere_than_linux_the_command_is_run_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert parentdeath.exit_with_parent(["/bin/true", "x"]) == ["/bin/true", "x"]
