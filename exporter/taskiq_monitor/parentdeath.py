"""Stop a launched command when the process that launched it dies, even by ``SIGKILL`` (Linux).

``taskiq-monitor worker`` starts ``taskiq worker`` as its child. Killed with ``SIGKILL`` (the OOM killer, ``kill -9``,
a container runtime past its grace period), the supervisor could forward nothing: taskiq's main process and its
worker children ran on as orphans, and a restarted supervisor on the same ``--metrics-dir`` wiped the files they
still wrote to (2000 tasks ran, 984 counted).

Linux sends a chosen signal to a process when its parent dies, if the process asked with
``prctl(PR_SET_PDEATHSIG)``. The request must be made by the child itself, between ``fork`` and ``exec`` (it survives
``exec``): ``preexec_fn`` would do that, but it is not safe in a process with threads (the supervisor runs the
exporter's). Instead the supervisor runs this module, which asks for ``SIGTERM``, then replaces itself by the
command with ``os.execv`` (same pid)::

    python -m taskiq_monitor.parentdeath SUPERVISOR_PID PROGRAM [ARGS…]

If the supervisor died before the request was made, the signal would never come: the parent pid is checked after it
and the command is not started at all. ``SIGTERM`` is taskiq's graceful stop: its main process sends ``SIGINT`` to
its worker children, which finish their running tasks and exit, and the main process waits for them.

The signal follows the *thread* that started the child: the supervisor starts it from its main thread (the event
loop's), which lives as long as the supervisor. Elsewhere than Linux the command runs as is (orphaned as before).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["EXIT_PARENT_GONE", "exit_with_parent", "main", "supported"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The exit status when the supervisor was already gone: nobody is left to read it, but a test or a shell can.
EXIT_PARENT_GONE = 75


def supported() -> bool:
    return sys.platform.startswith("linux")


def exit_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that it gets ``SIGTERM`` when this process dies (Linux); ``argv`` unchanged elsewhere.

    ``argv[0]`` must be a path (it is exec'd, not looked up in ``PATH``), e.g. ``sys.executable``.
    """
    if not supported():
        return list(argv)
    return [sys.executable, "-m", "taskiq_monitor.parentdeath", str(os.getpid()), *argv]


def _set_parent_death_signal(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m taskiq_monitor.parentdeath PARENT_PID PROGRAM [ARGS…]", file=sys.stderr)
        return 2
    parent, program = int(args[0]), args[1:]
    try:
        _set_parent_death_signal(signal.SIGTERM)
    except (OSError, AttributeError) as exc:  # a seccomp filter, a libc without prctl: run as before, orphanable
        print(f"taskiq-monitor: cannot tie the worker to its supervisor ({exc}); running it anyway", file=sys.stderr)
    else:
        if os.getppid() != parent:  # the supervisor died before the request: no signal will ever come
            return EXIT_PARENT_GONE
    os.execv(program[0], program)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
