"""What compiling the events' hot path to C would give: mypyc against the shipped pure Python, side by side.

Issue 11's total-CPU goal (2x taskiq's ``PrometheusMiddleware``) is not met by the interpreted code, and the
benchmark passes in docs/benchmarks.md name a native encoder as what is left. mypyc (it comes with mypy, a dev
dependency) compiles type-annotated modules to C extensions without a rewrite. This script measures what that gives,
and nothing of it ships:

1. copies ``exporter/taskiq_monitor`` to a temporary directory and compiles the modules of the events' path there
   (``HOT_MODULES``: the hooks, the events, redaction, the state sink, the in-process store, Loki's entry format);
2. runs ``bench_middleware.py --worker-side-only --no-redis`` and ``bench_event_stages.py`` on the shipped package and
   on the compiled copy, alternately, ``--pairs`` times;
3. prints the medians side by side.

The copy is edited for the compiler only (``EDITS``): ``EventSink`` allows interpreted subclasses (LokiSink and the
benchmarks' sinks stay interpreted) and its ``emit`` takes ``Any`` (deferred sinks get handles, which compiled code
would refuse against the ``TaskEvent`` annotation), and the state sink's ``_thread`` attribute is renamed (mypyc names
the C member ``__thread``, a GCC keyword). A run in which a configuration dropped events, or a hook failed, does less
than all the work: the script then exits 1 instead of reporting its figures. Needs gcc and the Python headers.
Usage::

    PYTHONPATH=exporter python benchmarks/bench_compiled.py [--pairs 3] [--tasks 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter" / "taskiq_monitor"
HOT_MODULES = (
    "middleware.py",
    "events.py",
    "redaction.py",
    "sinks/state.py",
    "store/memory.py",
    "store/history_memory.py",
    "sinks/loki/format.py",
)
# (file, text, replacement): the copy's edits for the compiler. A missing text fails loudly: the source moved on.
EDITS = (
    (
        "events.py",
        "\nclass EventSink:",
        "\nfrom mypy_extensions import mypyc_attr\n\n\n"
        "@mypyc_attr(allow_interpreted_subclasses=True)\nclass EventSink:",
    ),
    ("sinks/state.py", "self._thread", "self._flusher_thread"),
    # The hand-over passes handles where EventSink.emit's signature says TaskEvent (a type: ignore): compiled code
    # checks arguments against the base class's signature.
    ("events.py", "    def emit(self, event: TaskEvent) -> None:", "    def emit(self, event: Any) -> None:"),
    ("middleware.py", "sink.emit(item)  # type: ignore[arg-type]", "sink.emit(item)"),
)
# A row of bench_middleware.py's worker-side table: name, wall, tasks/s, loop, +loop, total, +total, ratio, ...
_ROW = re.compile(
    r"^  (?P<name>\S.*?)\s{2,}[\d.]+\s+\d+\s+[\d.]+\s+(?P<loop>-?[\d.]+)\s+[\d.]+\s+(?P<total>-?[\d.]+)\s+"
    r"(?P<ratio>[\d.]+)x\s+(?P<dropped>\d+)\s"
)
_STAGE = re.compile(r"^  (?P<name>\S.*?)\s{2,}(?P<us>[\d.]+) µs/task$")


def _ini(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _write_mypy_ini(workdir: Path) -> None:
    """The project's mypy settings (strict, the pydantic plugin) as a mypy.ini: a copy of pyproject.toml would
    carry its setuptools layout too, and send mypyc's build elsewhere."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    lines = ["[mypy]"]
    lines += [f"{key} = {_ini(value)}" for key, value in config.items() if key not in ("files", "overrides")]
    for override in config.get("overrides", []):
        lines.append(f"[mypy-{','.join(override['module'])}]")
        lines += [f"{key} = {_ini(value)}" for key, value in override.items() if key != "module"]
    (workdir / "mypy.ini").write_text("\n".join(lines) + "\n")


def _compile(workdir: Path) -> None:
    shutil.copytree(PACKAGE, workdir / "taskiq_monitor", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    _write_mypy_ini(workdir)
    for name, text, replacement in EDITS:
        path = workdir / "taskiq_monitor" / name
        source = path.read_text()
        if text not in source:
            raise SystemExit(f"bench_compiled: {name} no longer contains {text.strip()!r}; update EDITS")
        path.write_text(source.replace(text, replacement))
    mypyc = Path(sys.executable).with_name("mypyc")
    if not mypyc.exists():
        raise SystemExit("bench_compiled: mypyc not found beside this python (pip install mypy)")
    print(f"compiling {len(HOT_MODULES)} modules with mypyc (about a minute)...", flush=True)
    started = time.monotonic()
    done = subprocess.run(
        [str(mypyc), *(f"taskiq_monitor/{m}" for m in HOT_MODULES)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if "error" in line.lower()]
        raise SystemExit("bench_compiled: mypyc failed:\n" + "\n".join(errors[-20:]))
    print(f"compiled in {time.monotonic() - started:.0f} s", flush=True)


def _run(script: str, pythonpath: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or "Traceback" in done.stderr:
        raise SystemExit(f"bench_compiled: {script} failed with {pythonpath}:\n{done.stderr[-3000:]}")
    return done.stdout


def _rows(output: str) -> dict[str, tuple[float, float, float, int]]:
    rows: dict[str, tuple[float, float, float, int]] = {}
    for line in output.split("worker side", 1)[-1].splitlines():
        match = _ROW.match(line)
        if match:
            rows[match["name"]] = (
                float(match["loop"]),
                float(match["total"]),
                float(match["ratio"]),
                int(match["dropped"]),
            )
    return rows


def _stages(output: str) -> dict[str, float]:
    return {m["name"]: float(m["us"]) for line in output.splitlines() if (m := _STAGE.match(line))}


def _assert_compiled(workdir: Path) -> None:
    probe = "import taskiq_monitor.events as e, taskiq_monitor.middleware as m; print(e.__file__, m.__file__)"
    files = subprocess.run(
        [sys.executable, "-c", probe],
        env=dict(os.environ, PYTHONPATH=str(workdir)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(f.endswith(".so") for f in files):
        raise SystemExit(f"bench_compiled: the copy imports {files}, not compiled extensions")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        print("bench_compiled: needs a C compiler (gcc) and the Python headers", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-compiled-"))
    try:
        _compile(workdir)
        _assert_compiled(workdir)
        variants = {"pure Python": ROOT / "exporter", "mypyc": workdir}
        middleware: dict[str, list[dict[str, tuple[float, float, float, int]]]] = {v: [] for v in variants}
        stages: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        bench_args = ("--worker-side-only", "--no-redis", "--tasks", str(args.tasks), "--rounds", str(args.rounds))
        for pair in range(args.pairs):
            for variant, path in variants.items():
                print(f"pair {pair + 1}/{args.pairs}: {variant}...", flush=True)
                middleware[variant].append(_rows(_run("bench_middleware.py", path, *bench_args)))
                stages[variant].append(_stages(_run("bench_event_stages.py", path, "--rounds", str(args.rounds))))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def median(variant: str, name: str, column: int) -> float:
        return statistics.median(run[name][column] for run in middleware[variant])

    print(
        f"\npython {sys.version.split()[0]}, {args.tasks} tasks x {args.rounds} rounds, medians of {args.pairs} "
        f"alternated runs, load {os.getloadavg()[0]:.2f}"
    )
    print("worker side, µs per task over bare taskiq (÷ Prom: total over PrometheusMiddleware's, each run's own)")
    header = ("configuration", "+loop py", "+loop C", "+total py", "+total C", "÷Prom py", "÷Prom C", "total C/py")
    print(f"  {header[0]:<40}" + "".join(f"{h:>11}" for h in header[1:]))
    for name in middleware["pure Python"][0]:
        if name == "bare taskiq" or not all(name in run for v in variants for run in middleware[v]):
            continue
        py_total, c_total = median("pure Python", name, 1), median("mypyc", name, 1)
        figures = (
            f"{median('pure Python', name, 0):.2f}",
            f"{median('mypyc', name, 0):.2f}",
            f"{py_total:.2f}",
            f"{c_total:.2f}",
            f"{median('pure Python', name, 2):.2f}x",
            f"{median('mypyc', name, 2):.2f}x",
            f"{c_total / py_total:.2f}" if py_total > 0 else "-",
        )
        print(f"  {name:<40}" + "".join(f"{f:>11}" for f in figures))
    dropped = {v: sum(run[name][3] for run in middleware[v] for name in run) for v in variants}
    print(f"  events dropped or failed in any run: {dropped}")
    print("\nthe sinks' threads' stages (bench_event_stages.py, µs per task, GC off)")
    print(f"  {'stage':<30}{'pure Python':>13}{'mypyc':>9}{'C/py':>7}")
    for name in stages["pure Python"][0]:
        py = statistics.median(run[name] for run in stages["pure Python"])
        c = statistics.median(run[name] for run in stages["mypyc"])
        print(f"  {name:<30}{py:>13.2f}{c:>9.2f}{c / py if py else 0:>7.2f}")
    if any(dropped.values()):
        # A variant that lost events did less than all the work: its figures are not comparable.
        print("bench_compiled: events were dropped or a hook failed; the figures are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
