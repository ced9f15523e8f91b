"""Live feed benchmark: fan-out of one event stream to many WebSocket clients, and the hot-path cost.

Run (needs redis-server on PATH)::

    PYTHONPATH=exporter python benchmarks/bench_live.py --grid            # clients x rate x exporters
    PYTHONPATH=exporter python benchmarks/bench_live.py --clients 100 --rate 1000 --exporters 1 --seconds 10
    PYTHONPATH=exporter python benchmarks/bench_live.py --hot-path        # StateSink.emit and the hooks

What one cell does:

1. starts a throw-away redis-server and ``--exporters`` × ``taskiq-monitor serve`` on free ports;
2. starts client processes holding ``--clients`` WebSocket clients of ``/ws/events?v=2`` (spread evenly over the
   exporters). The clients are minimal (an asyncio BufferedProtocol reading raw frames into a buffer of its own,
   no deflate offered): a frame costs them ~10 µs of Python, so the client side is not what is measured, though
   on one machine their reads (the kernel's copies) compete with the exporter for the same cores;
3. once every client got its ``live`` frame, a producer process drives ``MonitoringMiddleware`` hooks (pre_send,
   post_send, pre_execute, post_execute: three state changes per task) at ``--rate`` events per second through the
   real ``StateSink`` -> Redis, for ``--seconds``;
4. each client counts the events it receives (nothing lost: every client must get every event). Every
   ``--exact-every``-th client (default 50) times each event itself: receipt time minus the event's ``timestamp``
   (the moment its hook ran; same host, same clock), split at the moment it entered the stream (its id's
   milliseconds). Every client also times each frame by its *oldest* event and counts that for every event of the
   frame (the "frame-bound" column: an upper bound per event, this script's only measure before). p50/p99/max
   over events; exporter CPU from /proc over the producer's run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRODUCER = r"""
import sys, time
from prometheus_client import CollectorRegistry
from taskiq import TaskiqMessage, TaskiqResult
from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings

rate, seconds = float(sys.argv[1]), float(sys.argv[2])
mw = MonitoringMiddleware(Settings(), registry=CollectorRegistry())
tasks_per_s = rate / 3
n = int(tasks_per_s * seconds)
start = time.perf_counter()
for i in range(n):
    target = start + i / tasks_per_s
    while (delay := target - time.perf_counter()) > 0:
        time.sleep(min(delay, 0.001))
    msg = TaskiqMessage(task_id=f"b{i}", task_name="score_message_task", labels={}, args=[i], kwargs={})
    mw.pre_send(msg)
    mw.post_send(msg)
    mw.pre_execute(msg)
    mw.post_execute(msg, TaskiqResult(is_err=False, return_value=None, execution_time=0.0))
for sink in mw.sinks:
    sink.stop()
print(n * 3, flush=True)
"""


CLIENTS = r"""
import asyncio, json, sys, time, zlib
from datetime import datetime

urls = sys.argv[1].split(",")
n = int(sys.argv[2])
every = int(sys.argv[3])  # every n-th client measures each event exactly
deflate = sys.argv[4] == "1"  # offer permessage-deflate, as browsers do, and inflate what comes compressed
KEY = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + \
      (b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else b"") + b"\r\n"
received_bytes = 0
hist = {}
exact = {}
to_stream = {}
from_stream = {}
live = 0


def add(h, ms):
    bucket = round(ms, 1)
    h[bucket] = h.get(bucket, 0) + 1


class Client(asyncio.BufferedProtocol):
    # Reads into one buffer of its own (recv_into): a plain Protocol gets a fresh bytes object per read, which
    # asyncio allocates at 256 KiB (an mmap and munmap per read) and the parser then copies again.
    def __init__(self, path, exact):
        self.path, self.upgraded, self.events, self.transport = path, False, 0, None
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.exact = exact
        self.inflater = zlib.decompressobj(-15)

    def connection_made(self, transport):
        self.transport = transport
        transport.write(KEY % self.path.encode())

    def get_buffer(self, sizehint):
        if len(self.buf) - self.end < 65536:  # keep room for a full read: move what is left to the front
            rest = self.end - self.start
            if rest + 65536 > len(self.buf):  # a frame larger than the buffer: grow it
                grown = bytearray(max(2 * len(self.buf), rest + 65536))
                grown[:rest] = self.view[self.start : self.end]
                self.view.release()
                self.buf, self.view = grown, memoryview(grown)
            else:
                self.buf[:rest] = bytes(self.view[self.start : self.end])  # may overlap: copy first
            self.start, self.end = 0, rest
        return self.view[self.end :]

    def buffer_updated(self, nbytes):
        global received_bytes
        received_bytes += nbytes
        buf, pos, stop = self.buf, self.start, self.end + nbytes
        self.end = stop
        if not self.upgraded:
            head = buf.find(b"\r\n\r\n", pos, stop)
            if head < 0:
                return
            pos = head + 4
            self.upgraded = True
        while stop - pos >= 2:
            size, off = buf[pos + 1] & 0x7F, pos + 2
            if size == 126:
                if stop - pos < 4:
                    break
                size, off = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif size == 127:
                if stop - pos < 10:
                    break
                size, off = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if stop < off + size:
                break
            opcode, end = buf[pos] & 0x0F, off + size
            if opcode == 9:  # ping: answer (client frames are masked; a zero mask keeps the payload)
                payload = bytes(buf[off:end])
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 1 and buf[pos] & 0x40:  # compressed (RSV1): inflate, then scan
                text = self.inflater.decompress(bytes(buf[off:end]) + b"\0\0\xff\xff")
                self.text(text, 0, len(text))
            elif opcode == 1:
                self.text(buf, off, end)  # scanned in place: no copy of the payload
            pos = end
        if pos == stop:
            self.start = self.end = 0
        else:
            self.start = pos

    def text(self, buf, off, end):
        global live
        now = time.time()
        if buf.startswith(b'{"type":"events"', off, end):
            count = buf.count(b'{"id":"', off, end)
        elif buf.startswith(b'{"type":"event"', off, end):
            count = 1
        else:
            if buf.startswith(b'{"type": "live"', off, end):
                live += 1
            return
        i = buf.find(b'"timestamp":"', off, end) + 13
        stamp = datetime.fromisoformat(buf[i : buf.index(b'"', i, end)].decode()).timestamp()
        bucket = round((now - stamp) * 1000, 1)
        hist[bucket] = hist.get(bucket, 0) + count
        self.events += count
        if self.exact:
            # Each event's own latency, split at the moment it entered the stream (the id's milliseconds).
            i = off
            while (i := buf.find(b'{"id":"', i, end)) >= 0:
                dash = buf.index(b"-", i + 7, end)
                added = int(buf[i + 7 : dash]) / 1000
                t = buf.index(b'"timestamp":"', dash, end) + 13
                i = buf.index(b'"', t, end)
                stamp = datetime.fromisoformat(buf[t:i].decode()).timestamp()
                add(exact, (now - stamp) * 1000)
                add(to_stream, (added - stamp) * 1000)
                add(from_stream, (now - added) * 1000)


async def main():
    loop = asyncio.get_running_loop()
    clients = []
    for i in range(n):
        host, port, path = urls[i % len(urls)].split("|")
        timed = (i // len(urls)) % every == 0  # the same share of each exporter's clients
        _, proto = await loop.create_connection(lambda p=path, x=timed: Client(p, x), host, int(port))
        clients.append(proto)
    while live < n:
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    expected = int((await loop.run_in_executor(None, sys.stdin.readline)).strip())
    deadline = time.monotonic() + 30
    while any(c.events < expected for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    result = {
        "counts": [c.events for c in clients],
        "hist": list(hist.items()),
        "exact": list(exact.items()),
        "to_stream": list(to_stream.items()),
        "from_stream": list(from_stream.items()),
        "cpu": time.process_time(),
        "bytes": received_bytes,
    }
    print(json.dumps(result), flush=True)


asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(
    env: dict[str, str],
    ports: list[int],
    pids: list[int],
    clients: int,
    rate: float,
    seconds: float,
    version: int,
    exact_every: int = 50,
    deflate: bool = False,
) -> dict[str, float]:
    """One cell of the grid: ``clients`` spread over the exporters on ``ports``; see the module docstring."""
    urls = ",".join(f"127.0.0.1|{port}|/ws/events?v={version}" for port in ports)
    nprocs = min(2, max(1, clients // 250))
    shares = [clients // nprocs + (1 if i < clients % nprocs else 0) for i in range(nprocs)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENTS, urls, str(share), str(exact_every), "1" if deflate else "0"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        cpu0 = [cpu_seconds(pid) for pid in pids]
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", PRODUCER, str(rate), str(seconds)], env=env, capture_output=True, text=True
        )
        expected = int(out.stdout.split()[-1])
        counts: list[int] = []
        hists: dict[str, dict[float, int]] = {name: {} for name in HISTOGRAMS}
        client_cpu = 0.0
        received_bytes = 0
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{expected}\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            counts += result["counts"]
            client_cpu += result["cpu"]
            received_bytes += result["bytes"]
            for name, hist in hists.items():
                for bucket, n in result[name]:
                    hist[bucket] = hist.get(bucket, 0) + n
        # From the first event to the last delivery: the exporter's work may outlast the producer.
        wall = time.monotonic() - started
        cpu = [(cpu_seconds(pid) - c0) / wall * 100 for pid, c0 in zip(pids, cpu0, strict=True)]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    out = {
        "expected": expected * clients,
        "received": sum(counts),
        "short_clients": sum(1 for c in counts if c < expected),
        "cpu": max(cpu),
        "client_cpu": client_cpu / wall * 100,
        "bytes_per_event": received_bytes / max(1, sum(counts)),
    }
    for name, hist in hists.items():
        for q, value in quantiles(hist).items():
            out[f"{name}_{q}"] = value
    return out


# Latency histograms (ms buckets) the clients return: "hist" counts every event of a frame at the age of the
# frame's oldest event (an upper bound, every client); the others measure each event itself, on every
# --exact-every-th client: hook to receipt, hook to the stream (the id's milliseconds: the worker's flusher), and
# stream to receipt (the exporter's read, tick and write, and the client's own wait for a core).
HISTOGRAMS = ("hist", "exact", "to_stream", "from_stream")


def quantiles(hist: dict[float, int]) -> dict[str, float]:
    ordered = sorted(hist.items())
    total = sum(n for _, n in ordered)

    def quantile(q: float) -> float:
        seen = 0
        for bucket, n in ordered:
            seen += n
            if seen >= q * total:
                return bucket
        return float("nan")

    return {"p50": quantile(0.5), "p99": quantile(0.99), "max": ordered[-1][0] if ordered else float("nan")}


def hot_path(redis_url: str) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from taskiq import TaskiqMessage, TaskiqResult

    from taskiq_monitor.events import TaskEvent
    from taskiq_monitor.middleware import MonitoringMiddleware
    from taskiq_monitor.settings import Settings
    from taskiq_monitor.sinks.state import StateSink

    settings = Settings(redis_url=redis_url, state_buffer_events=1_000_000)
    out: dict[str, float] = {}
    sink = StateSink(settings, registry=CollectorRegistry())
    n = 50_000
    events = [TaskEvent(status="pending", task_id=f"h{i}", task_name="t", timestamp=time.time()) for i in range(n)]
    t0 = time.perf_counter()
    for event in events:
        sink.emit(event)
    out["emit_us"] = (time.perf_counter() - t0) / n * 1e6
    sink.stop()

    def per_task(mw: MonitoringMiddleware, tasks: int) -> float:
        result: TaskiqResult[None] = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)
        msgs = [
            TaskiqMessage(task_id=f"m{i}", task_name="score_message_task", labels={}, args=[i], kwargs={})
            for i in range(tasks)
        ]
        t = time.perf_counter()
        for msg in msgs:
            mw.pre_send(msg)
            mw.post_send(msg)
            mw.pre_execute(msg)
            mw.post_execute(msg, result)
        return (time.perf_counter() - t) / tasks * 1e6

    bare = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[])
    with_state = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[StateSink(settings)])
    per_task(bare, 2000)  # warm-up
    per_task(with_state, 2000)
    out["task_hooks_bare_us"] = statistics.median(per_task(bare, 10_000) for _ in range(3))
    out["task_hooks_state_us"] = statistics.median(per_task(with_state, 10_000) for _ in range(3))
    for s in with_state.sinks:
        s.stop()  # type: ignore[attr-defined]
    return out


def start_exporter(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskiq_monitor.cli", "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0, help="state changes per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="producer run per cell (default 10)")
    parser.add_argument("--clients", type=int, default=1, help="WebSocket clients (default 1)")
    parser.add_argument("--exporters", type=int, default=1, choices=(1, 2), help="exporters serving them")
    parser.add_argument("--protocol", type=int, default=2, choices=(1, 2), help="feed protocol version")
    parser.add_argument(
        "--exact-every", type=int, default=50, help="every n-th client times each event itself (default 50)"
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="exporters with TASKIQ_MONITOR_LIVE_COMPRESSION=true, clients offering permessage-deflate (and inflating)",
    )
    parser.add_argument("--grid", action="store_true", help="1,10,100,500,1000 clients x 200,1000 events/s x 1,2")
    parser.add_argument("--hot-path", action="store_true", help="measure StateSink.emit and the hooks instead")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers started below on TERM too
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    rport = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-live-")
    redis = subprocess.Popen(
        [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{rport}/0"
    env = dict(os.environ, TASKIQ_MONITOR_REDIS_URL=redis_url)
    if args.deflate:
        env["TASKIQ_MONITOR_LIVE_COMPRESSION"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "exporter"), env.get("PYTHONPATH")]))
    procs: list[subprocess.Popen[bytes]] = [redis]
    try:
        if args.hot_path:
            wait_port(rport)
            hp = hot_path(redis_url)
            print("hot path (this process, Redis reachable, flusher thread running):")
            print(f"  StateSink.emit: {hp['emit_us']:.2f} µs/event")
            print(
                f"  pre_send+post_send+pre_execute+post_execute per task: {hp['task_hooks_bare_us']:.1f} µs without "
                f"sinks, {hp['task_hooks_state_us']:.1f} µs with the state sink "
                f"(+{hp['task_hooks_state_us'] - hp['task_hooks_bare_us']:.1f} µs for 3 events)"
            )
            return 0
        exporters = [start_exporter(env) for _ in range(2 if args.grid else args.exporters)]
        procs += [proc for proc, _ in exporters]
        if args.grid:
            cells = [(c, r, e) for e in (1, 2) for r in (200.0, 1000.0) for c in (1, 10, 100, 500, 1000)]
        else:
            cells = [(args.clients, args.rate, args.exporters)]
        compression = "per-message deflate" if args.deflate else "no compression"
        print(f"protocol v{args.protocol}, {compression}, {args.seconds:.0f} s per cell, {os.cpu_count()} CPUs")
        print(
            "| clients | events/s | exporters | p50 ms | p99 ms | max ms | frame-bound p50 / p99 ms "
            "| to stream p99 ms | from stream p99 ms | received / expected | exporter CPU % | clients' CPU % "
            "| wire bytes / event |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for clients, rate, count in cells:
            serving = exporters[:count]
            cell = run_cell(
                env,
                [port for _, port in serving],
                [proc.pid for proc, _ in serving],
                clients,
                rate,
                args.seconds,
                args.protocol,
                args.exact_every,
                args.deflate,
            )
            lost = "" if cell["received"] == cell["expected"] else f" ({cell['short_clients']:.0f} clients short)"
            print(
                f"| {clients} | {rate:.0f} | {count} | {cell['exact_p50']:.1f} | {cell['exact_p99']:.1f} | "
                f"{cell['exact_max']:.1f} | {cell['hist_p50']:.1f} / {cell['hist_p99']:.1f} | "
                f"{cell['to_stream_p99']:.1f} | {cell['from_stream_p99']:.1f} | "
                f"{cell['received']:.0f} / {cell['expected']:.0f}{lost} | {cell['cpu']:.0f} | "
                f"{cell['client_cpu']:.0f} | {cell['bytes_per_event']:.0f} |",
                flush=True,
            )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


if __name__ == "__main__":
    sys.exit(main())
