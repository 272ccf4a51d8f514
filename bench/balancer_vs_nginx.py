"""Throughput and added latency: the embedded balancer vs nginx, same backends, same run.

    .venv/bin/python bench/balancer_vs_nginx.py [--rounds 3] [--duration 5] [--connections 32]
        [--workers 2]

Two backends (gunicorn, sync workers, a tiny response) behind (a) `msm balancer` and (b) nginx
with the config from `msm nginx-config` (one worker, like the one balancer process), both round
robin; with --workers N > 1 also (c) `msm balancer --workers N` and (d) nginx with N workers. Load comes from wrk when installed (`apt-get install wrk`), else from a Python
multi-process keep-alive client. Throughput is measured at --connections, latency at one
connection (so it is the proxy's own cost, not queueing); each figure is the median of --rounds
rounds, targets interleaved per round.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pymsm.balancer import BalancerConfig, command, parse_backends
from pymsm.balancer.nginx import full_config

HERE = Path(__file__).resolve().parent
BODY = b"hello from a backend\n"


def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    """The backends' WSGI app: a tiny fixed response."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


# --- load generation


def wrk(url: str, connections: int, duration: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from wrk."""
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out)[0])
    return rps, _wrk_latency(out, "50%"), _wrk_latency(out, "99%")


def _find(pattern: str, text: str) -> tuple[str, ...]:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return match.groups()


def _wrk_latency(out: str, percentile: str) -> float:
    value, unit = _find(rf"{percentile}\s+([\d.]+)(us|ms|s)", out)
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _client(args: tuple[str, int, float]) -> list[float]:
    host, port, duration = args
    conn = http.client.HTTPConnection(host, port)
    latencies = []
    deadline = time.perf_counter() + duration
    while (start := time.perf_counter()) < deadline:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        if response.will_close:
            conn.close()
        latencies.append((time.perf_counter() - start) * 1000)
    conn.close()
    return latencies


def python_load(url: str, connections: int, duration: float) -> tuple[float, float, float]:
    """Fallback without wrk: one process per connection (slower than wrk; same for every target)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with multiprocessing.Pool(connections) as pool:
        runs = pool.map(_client, [(host, int(port), duration)] * connections)
    latencies = sorted(x for run in runs for x in run)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return len(latencies) / duration, percentile(0.50), percentile(0.99)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in children)


# --- parsers alone: where the balancer's Python time goes (--parsers)

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Fri, 20 Nov 2026 23:50:00 GMT\r\n"
    b"Connection: close\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\n" + BODY
)


def h11_proxied_request() -> bytes:
    """The h11 work of one proxied request, as proxy.py does it, without I/O."""
    import h11

    server = h11.Connection(h11.SERVER)
    server.receive_data(REQUEST)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    server.next_event()
    client = h11.Connection(h11.CLIENT)
    headers = [*request.headers, (b"x-forwarded-for", b"127.0.0.1")]
    out = client.send(h11.Request(method=request.method, target=request.target, headers=headers))
    out += client.send(h11.EndOfMessage()) or b""
    client.receive_data(RESPONSE)
    response, data = client.next_event(), client.next_event()
    client.next_event()
    assert isinstance(response, h11.Response) and isinstance(data, h11.Data)
    kept = [(n, v) for n, v in response.headers if n != b"connection"]
    out = server.send(h11.Response(status_code=200, headers=kept, reason=response.reason)) or b""
    return out + (server.send(data) or b"") + (server.send(h11.EndOfMessage()) or b"")


class _Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, data: bytes) -> None:
        self.body.append(data)


def httptools_proxied_request() -> bytes:
    """The same with httptools parsing and the heads joined by hand."""
    import httptools

    request = _Collect()
    httptools.HttpRequestParser(request).feed_data(REQUEST)
    lines = [b"%s: %s\r\n" % pair for pair in request.headers]
    out = b"GET / HTTP/1.1\r\n" + b"".join(lines) + b"x-forwarded-for: 127.0.0.1\r\n\r\n"
    response = _Collect()
    httptools.HttpResponseParser(response).feed_data(RESPONSE)
    lines = [b"%s: %s\r\n" % pair for pair in response.headers if pair[0] != b"connection"]
    return out + b"HTTP/1.1 200 OK\r\n" + b"".join(lines) + b"\r\n" + b"".join(response.body)


def parsers() -> None:
    import timeit

    for run in (h11_proxied_request, httptools_proxied_request):
        try:
            seconds = min(timeit.repeat(run, number=5000, repeat=5)) / 5000
        except ImportError as exc:
            print(f"{run.__name__}: {exc.name} is not installed (pip install {exc.name})")
            continue
        print(f"{run.__name__}: {seconds * 1e6:.1f} us per proxied request")


# --- servers


class ServerProcess:
    """A server on a free loopback port; `start()` returns once it accepts connections."""

    def __init__(self, argv: Callable[[int], list[str]]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.argv = argv
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv(self.port), stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.argv(self.port)} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def gunicorn(workers: int) -> ServerProcess:
    return ServerProcess(
        lambda port: [
            sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "-k", "sync", "--chdir", str(HERE), "--log-level", "warning",
            "balancer_vs_nginx:app",
        ]
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--backend-workers", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, default=2, help="also compare N balancer vs N nginx workers"
    )
    parser.add_argument(
        "--parsers", action="store_true", help="only time h11 vs httptools for one request"
    )
    args = parser.parse_args()
    if args.parsers:
        parsers()
        return 0
    load = wrk if shutil.which("wrk") else python_load
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    backends = [gunicorn(args.backend_workers), gunicorn(args.backend_workers)]
    specs = parse_backends([f"app{i + 1}=127.0.0.1:{b.port}" for i, b in enumerate(backends)])
    prefix = Path(tempfile.mkdtemp(prefix="msm-bench-nginx-"))

    def balancer_argv(workers: int) -> Callable[[int], list[str]]:
        return lambda port: command(
            BalancerConfig(specs, port=port, access_log=False, workers=workers)
        )

    def nginx_argv(workers: int) -> Callable[[int], list[str]]:
        def argv(port: int) -> list[str]:
            (prefix / str(workers)).mkdir(exist_ok=True)
            conf = prefix / str(workers) / "nginx.conf"
            listen = f"127.0.0.1:{port}"
            conf.write_text(
                full_config(specs, "round_robin", listen, workers=str(workers), access_log=False)
            )
            return [nginx_bin, "-e", "stderr", "-p", str(prefix / str(workers)), "-c", str(conf)]

        return argv

    proxies = {"balancer": ServerProcess(balancer_argv(1)), "nginx": ServerProcess(nginx_argv(1))}
    if args.workers > 1:
        proxies[f"balancer-{args.workers}"] = ServerProcess(balancer_argv(args.workers))
        proxies[f"nginx-{args.workers}"] = ServerProcess(nginx_argv(args.workers))
    servers = [*backends, *proxies.values()]
    try:
        for server in servers:
            server.start()
        targets = {"direct": backends[0], **proxies}
        results: dict[str, list[tuple[float, ...]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, server in targets.items():
                url = f"http://127.0.0.1:{server.port}/"
                assert server.process is not None
                cpu = cpu_seconds(server.process.pid)
                rps, _, _ = load(url, args.connections, args.duration)
                cpu = cpu_seconds(server.process.pid) - cpu
                _, p50, p99 = load(url, 1, args.duration / 2)
                results[name].append((rps, p50, p99, cpu * 1e6 / (rps * args.duration)))
        report(results, load.__name__, args)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(prefix, ignore_errors=True)
    return 0


def report(results: dict[str, list[tuple[float, ...]]], tool: str, args: object) -> None:
    med = {
        name: [statistics.median(col) for col in zip(*rows, strict=True)]
        for name, rows in results.items()
    }
    print(f"load: {tool}, {vars(args)}")
    header = f"{'target':<12} {'req/s':>8} {'p50 ms (c=1)':>13} {'p99 ms (c=1)':>13}"
    print(f"{header} {'CPU us/req':>11}")
    for name, (rps, p50, p99, cpu) in med.items():
        print(f"{name:<12} {rps:>8.0f} {p50:>13.3f} {p99:>13.3f} {cpu:>11.0f}")
    print("(CPU us/req: the target's own processes, throughput runs; direct = one backend)")
    pairs = [(name, name.replace("balancer", "nginx")) for name in med if "balancer" in name]
    for ours, theirs in pairs:
        ratio = med[ours][0] / med[theirs][0]
        cost = med[ours][3] / med[theirs][3]
        print(
            f"{ours}/{theirs}: throughput {ratio:.2f}x (target >= 0.7x), CPU per request {cost:.1f}x"
        )
    for name in med:
        if name == "direct":
            continue
        added50 = med[name][1] - med["direct"][1]
        added99 = med[name][2] - med["direct"][2]
        print(f"{name} added latency vs direct: p50 {added50:+.3f} ms, p99 {added99:+.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
