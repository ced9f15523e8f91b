"""Check that ``MODULE:BROKER`` names a taskiq broker before ``taskiq-monitor worker`` starts ``taskiq worker``.

taskiq's process manager restarts a worker process that cannot import its broker once a second, forever, with a
traceback each time: ``taskiq-monitor worker nosuch.module:broker`` never ends. The supervisor checks first and
exits with code 2 and one line instead.

The check imports the module in a short-lived child process (``python -m taskiq_monitor.brokerspec SPEC``), the
way taskiq will (working directory and ``--app-dir`` on ``sys.path``, a factory function accepted), because:

- importing the application in the supervisor would import prometheus_client (through the middleware) before the
  multiprocess directory is set up, and keep whatever the application starts at import in a process that only
  serves ``/metrics``;
- ``importlib.util.find_spec`` alone would pass a misspelt attribute (``app.tasks:brokr``), an attribute that is no
  broker and a module that raises on import, all of which make taskiq loop the same way.

The price is one import of the application at start-up (about a second for the demo's tasks). The child leaves
through ``os._exit``: a thread the application starts at import must not keep it alive.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from taskiq_monitor.errors import UsageError

logger = logging.getLogger(__name__)

# Generous: an application may connect to things at import. Past it the check is skipped, not failed.
CHECK_TIMEOUT_SECONDS = 60.0
# Marks the child's verdict among whatever the application prints while it is imported.
_VERDICT = "taskiq-monitor-brokerspec: "
_EXIT_BAD = 2


def format_problem(spec: str) -> str | None:
    """Why ``spec`` is not of the form ``module.path:attribute`` (what taskiq's ``import_object`` accepts), or None."""
    module, colon, attribute = spec.partition(":")
    if not colon or ":" in attribute:
        return f"{spec!r} is not MODULE:BROKER (one colon), e.g. app.tasks:broker"
    if not all(part.isidentifier() for part in module.split(".")) or not attribute.isidentifier():
        return f"{spec!r} is not MODULE:BROKER (dotted Python names), e.g. app.tasks:broker"
    return None


def app_dir_of(taskiq_args: Sequence[str]) -> str | None:
    """The value of taskiq's ``--app-dir``/``-d`` among ``taskiq_args``, the last one winning as in argparse."""
    found: str | None = None
    for index, arg in enumerate(taskiq_args):
        if arg in ("--app-dir", "-d") and index + 1 < len(taskiq_args):
            found = taskiq_args[index + 1]
        elif arg.startswith("--app-dir="):
            found = arg.partition("=")[2]
    return found


def check_broker_spec(spec: str, app_dir: str | None = None, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
    """Raise :class:`UsageError` (one line) unless ``spec`` imports, in a child process, to a taskiq broker."""
    problem = format_problem(spec)
    if problem is not None:
        raise UsageError(problem)
    command = [sys.executable, "-m", "taskiq_monitor.brokerspec", spec, *([app_dir] if app_dir else [])]
    # Without the multiprocess directory: the application's metrics must not leave files in anybody's directory.
    env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        logger.warning("importing %s took over %.0f s; starting taskiq without checking it", spec, timeout)
        return
    if result.returncode == 0:
        return
    verdicts = [line[len(_VERDICT) :] for line in result.stdout.splitlines() if line.startswith(_VERDICT)]
    if verdicts:
        raise UsageError(verdicts[-1])
    raise UsageError(f"importing {spec} ended the process with exit code {result.returncode}")


def _verdict(spec: str) -> str | None:
    """Import ``spec`` as taskiq does; None when it names a broker or a factory function, else the problem."""
    import importlib
    import inspect

    from taskiq import AsyncBroker

    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            return (
                f"cannot import {module_name}: no module named {exc.name} "
                "(run from your project's directory, or pass taskiq's --app-dir)"
            )
        return f"importing {module_name} failed: {exc}"
    except BaseException as exc:  # SystemExit too: it is the application's, reported like the rest
        # One line: the traceback is one import away.
        first = _first_line(exc)
        return (
            f"importing {module_name} failed: {type(exc).__name__}{': ' if first else ''}{first} "
            f"(the traceback: python -c 'import {module_name}')"
        )
    if not hasattr(module, attribute):
        return f"module {module_name} has no attribute {attribute!r}"
    value = getattr(module, attribute)
    if inspect.isfunction(value):
        # A broker factory, which taskiq calls without arguments in every worker process: called here too, since
        # one that fails or returns something else makes taskiq loop all the same.
        try:
            value = value()
        except Exception as exc:  # the application's: one line, as above
            return f"calling {spec}() failed: {type(exc).__name__}: {_first_line(exc)}"
        if not isinstance(value, AsyncBroker):
            return f"{spec}() returns a value of type {type(value).__name__}, not a taskiq broker (AsyncBroker)"
    elif not isinstance(value, AsyncBroker):
        return (
            f"{spec} has type {type(value).__name__}, not a taskiq broker (an AsyncBroker or a function returning one)"
        )
    return None


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, short, without the password of a URL it may quote."""
    from taskiq_monitor.redaction import mask_url_credentials

    text = str(exc).strip()
    return mask_url_credentials(text.splitlines()[0] if text else "")[:300]


def _main(argv: Sequence[str]) -> None:
    spec, app_dir = argv[0], (argv[1] if len(argv) > 1 else None)
    # As taskiq's import_object: the working directory first (``python -m`` put it there), then --app-dir.
    if app_dir:
        sys.path.insert(0, app_dir)
    problem = _verdict(spec)
    if problem is not None:
        print(_VERDICT + problem, flush=True)
    sys.stderr.flush()
    os._exit(_EXIT_BAD if problem is not None else 0)


if __name__ == "__main__":
    _main(sys.argv[1:])
