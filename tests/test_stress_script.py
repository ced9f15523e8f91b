"""tools/stress.sh (`make test-stress`): the hogs really run beside the command, and are gone afterwards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRESS = ROOT / "tools" / "stress.sh"

# Run by the script: prints the hogs' PIDs and what each one runs, while they run. A hog forked a moment ago may not
# have exec'd `yes` yet (its cmdline is still the shell's, or empty): each is given up to 10 s to get there.
REPORT = (
    'for p in $STRESS_HOG_PIDS; do c=""; for i in $(seq 200); do c=$(tr "\\0" " " < /proc/$p/cmdline); '
    'case "$c" in yes*) break;; esac; sleep 0.05; done; echo "$p $c"; done'
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; a reused PID would run something other than `yes`
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z") and (
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"yes"
        )
    except OSError:
        return False


def test_hogs_run_beside_every_run_and_are_killed_afterwards() -> None:
    result = subprocess.run(
        [str(STRESS), "2", "3", "--", "sh", "-c", REPORT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("==>")]
    assert len(lines) == 6  # 2 hogs, seen by each of the 3 runs
    pids = {int(line.split()[0]) for line in lines}
    assert len(pids) == 2 and all(line.split()[1] == "yes" for line in lines)
    assert not [pid for pid in pids if alive(pid)]
    assert "3 run(s) green with 2 CPU hogs" in result.stdout


def test_a_failing_run_stops_the_series_with_its_exit_code_and_kills_the_hogs() -> None:
    script = 'echo "$STRESS_HOG_PIDS"; exit 3'
    result = subprocess.run(
        [str(STRESS), "2", "3", "--", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "run 1 of 3 failed (exit 3)" in result.stdout and "run 2 of 3" not in result.stdout
    pids = [int(p) for p in result.stdout.splitlines()[2].split()]
    assert len(pids) == 2 and not [pid for pid in pids if alive(pid)]


def test_usage_error_without_the_separator() -> None:
    result = subprocess.run([str(STRESS), "2", "1", "true"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage" in result.stderr
