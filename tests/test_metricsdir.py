"""The supervisor's metrics directory: only our own files are wiped, a foreign directory is refused, one supervisor
per directory (an fcntl lock), and a directory we create is private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.metricsdir import MARKER_FILE, MetricsDirError, claim_directory, prepare_directory
from tests.other_user import other_uid

# Every file name prometheus_client's MultiProcessValue writes, and the exemplar side files (exemplars.py).
OURS = [
    "counter_11.db",
    "histogram_12.db",
    "summary_13.db",
    "gauge_all_14.db",
    "gauge_liveall_14.db",
    "gauge_min_15.db",
    "gauge_livemin_15.db",
    "gauge_max_16.db",
    "gauge_livemax_16.db",
    "gauge_sum_17.db",
    "gauge_livesum_17.db",
    "gauge_mostrecent_18.db",
    "gauge_livemostrecent_18.db",
    "exemplars_19.json",
    ".exemplars-k2j3h4.tmp",
]
# What an application might keep beside them: *.db that are not prometheus_client's among them.
THEIRS = ["app.db", "counter.db", "gauge_livesum.db", "counter_12.db.bak", "histogram_x.db", "notes.txt"]


def plant(directory: Path, names: list[str]) -> None:
    for name in names:
        (directory / name).write_bytes(b"x")


def test_prepare_directory_wipes_stale_files(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    prepare_directory(tmp_path, wipe=True)
    assert not (tmp_path / "counter_123.db").exists()
    assert (tmp_path / "keep.txt").exists()


def test_wipe_deletes_only_prometheus_client_files_and_side_files(tmp_path: Path) -> None:
    plant(tmp_path, OURS + THEIRS)
    prepare_directory(tmp_path, wipe=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(THEIRS)


def test_prepare_directory_rejects_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(MetricsDirError, match=r"cannot be created|not a directory"):
        prepare_directory(target, wipe=True)


@pytest.mark.skipif(os.getuid() == 0, reason="root can write anywhere")
def test_prepare_directory_rejects_unwritable(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(MetricsDirError, match="not writable"):
            prepare_directory(tmp_path, wipe=False)
    finally:
        tmp_path.chmod(0o700)


def test_claim_refuses_a_directory_holding_foreign_files_and_deletes_nothing(tmp_path: Path) -> None:
    plant(tmp_path, ["counter_11.db", "app.db"])
    with pytest.raises(MetricsDirError) as raised:
        claim_directory(tmp_path, wipe=True)
    message = str(raised.value)
    assert str(tmp_path) in message and "app.db" in message and "directory of its own" in message
    assert "\n" not in message
    assert isinstance(raised.value, ConfigError)  # main() maps it to exit code 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "counter_11.db"]


def test_claim_accepts_an_empty_directory_and_marks_it(tmp_path: Path) -> None:
    target = tmp_path / "metrics"
    with claim_directory(target, wipe=True):
        marker = target / MARKER_FILE
        assert marker.is_file()
        assert f"pid {os.getpid()}" in marker.read_text()
        assert stat.S_IMODE(marker.stat().st_mode) == 0o600


def test_claim_of_a_marked_directory_wipes_ours_and_keeps_the_rest(tmp_path: Path) -> None:
    claim_directory(tmp_path, wipe=True).release()  # the first start marks it
    plant(tmp_path, [*OURS, "app.db"])
    with claim_directory(tmp_path, wipe=True):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["app.db", MARKER_FILE])


def test_claim_accepts_a_directory_of_only_our_files(tmp_path: Path) -> None:
    plant(tmp_path, OURS)  # an earlier run, before the marker existed
    with claim_directory(tmp_path, wipe=True):
        assert [p.name for p in tmp_path.iterdir()] == [MARKER_FILE]


def test_second_claim_on_a_locked_directory_is_refused_and_keeps_the_first_ones_files(tmp_path: Path) -> None:
    first = claim_directory(tmp_path, wipe=True)
    try:
        plant(tmp_path, ["counter_11.db"])  # the first supervisor's workers write
        for wipe in (True, False):  # a second `worker` and a `serve`
            with pytest.raises(MetricsDirError) as raised:
                claim_directory(tmp_path, wipe=wipe)
            assert f"in use by another taskiq-monitor supervisor (pid {os.getpid()})" in str(raised.value)
            assert (tmp_path / "counter_11.db").exists()
    finally:
        first.release()
    # Released: the next supervisor gets it (and wipes the previous run's files).
    with claim_directory(tmp_path, wipe=True):
        assert not (tmp_path / "counter_11.db").exists()


def test_serve_claim_does_not_wipe(tmp_path: Path) -> None:
    plant(tmp_path, ["counter_11.db", "app.db"])
    with claim_directory(tmp_path, wipe=False):
        assert (tmp_path / "counter_11.db").exists() and (tmp_path / "app.db").exists()


def test_created_directory_is_private(tmp_path: Path) -> None:
    target = tmp_path / "a" / "metrics"
    with claim_directory(target, wipe=True):
        assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_claim_refuses_a_directory_of_another_user(tmp_path: Path) -> None:
    uid = other_uid()
    target = tmp_path / "planted"
    target.mkdir(mode=0o700)
    plant(target, ["counter_1.db"])  # "3,301 started tasks" on an idle worker
    os.chown(target, uid, -1)
    with pytest.raises(MetricsDirError, match=rf"{target} is owned by uid {uid}, not by this user"):
        claim_directory(target, wipe=False)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_claim_refuses_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(mode)
    with pytest.raises(MetricsDirError, match=rf"{target} is writable by other users \(mode {mode:04o}\)"):
        claim_directory(target, wipe=True)
    assert not (target / MARKER_FILE).exists()


WRITER = (
    "import sys\n"
    "from prometheus_client import Counter\n"  # PROMETHEUS_MULTIPROC_DIR is set: the value file is mmapped
    "Counter('work', 'done', ['k']).labels('a').inc()\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="live writers are found through /proc (Linux)")
def test_wipe_is_refused_while_a_process_still_writes_to_the_directory(tmp_path: Path) -> None:
    # A killed supervisor's workers still running: wiping under them lost their counts for good.
    directory = tmp_path / "m"
    claim_directory(directory, wipe=True).release()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    writer = subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        with pytest.raises(MetricsDirError, match=rf"still written by running processes \(pid {writer.pid}\)"):
            claim_directory(directory, wipe=True)
        assert (directory / f"counter_{writer.pid}.db").exists()
        claim_directory(directory, wipe=False).release()  # serve only reads: no objection
    finally:
        writer.communicate(b"", timeout=30)
    with claim_directory(directory, wipe=True):  # once it has exited, its files are stale: wiped
        assert not (directory / f"counter_{writer.pid}.db").exists()
