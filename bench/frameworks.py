"""Flask, Django and FastAPI with no session, the framework's default session, the usual peer,
and pymsm (two memcached nodes with backup, non-sticky), measured with wrk in one run.

The app changes the session on every request (a counter); each wrk connection keeps its own
session (one connection per wrk thread; the Lua script stores the Set-Cookie per thread).
WSGI apps run on gunicorn with 4 sync workers, FastAPI on uvicorn with 4 workers on uvloop
(on asyncio's loop, uvicorn's `--workers` leaves TCP_NODELAY off: see `keepalive_ms`). Prints the
median of `--rounds` rounds (variants interleaved) of req/s, p50, p99 and the app's CPU time per
request (server process tree, from /proc), and each variant's ratio to the same framework with
no session and to the peer.

    python bench/frameworks.py                  # needs wrk, memcached, redis-server
    python bench/frameworks.py --only flask --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.servers import ServerProcess, memcached_server

BENCH = Path(__file__).resolve().parent

LUA = """
local cookie = nil
request = function()
  if cookie then return wrk.format("GET", "/count", {["Cookie"] = cookie}) end
  return wrk.format("GET", "/count")
end
response = function(status, headers, body)
  local value = headers["Set-Cookie"] or headers["set-cookie"]
  if value then cookie = string.match(value, "^([^;]+)") end
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %f, "p50": %d, "p99": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
"""

VARIANTS = {
    "flask": ["none", "cookie", "flask-session", "pymsm"],
    "django": ["none", "db", "cache", "pymsm"],
    "fastapi": ["none", "cookie", "starsessions", "pymsm"],
}
PEER = {"flask": "flask-session", "django": "cache", "fastapi": "starsessions"}


def server_argv(framework: str) -> list[str]:
    python = sys.executable
    if framework == "fastapi":
        # uvloop sets TCP_NODELAY on every accepted socket; asyncio only when the listening
        # socket says IPPROTO_TCP, and the one uvicorn binds for --workers says 0
        # (Kludex/uvicorn#3149): each keep-alive response's body then waits ~40 ms for wrk's
        # delayed ACK, whatever the session.
        return [
            *(python, "-m", "uvicorn", "--app-dir", str(BENCH / "apps")),
            *("--workers", "4", "--loop", "uvloop"),
        ]
    app = "flask_bench:app" if framework == "flask" else "django_bench:application"
    return [python, "-m", "gunicorn", "-w", "4", "--chdir", str(BENCH / "apps"), app]


def start_app(framework: str, env: dict[str, str]) -> ServerProcess:
    base = server_argv(framework)

    def argv(port: int) -> list[str]:
        if framework == "fastapi":
            return [*base, "--port", str(port), "--log-level", "warning", "fastapi_bench:app"]
        return [*base[:-1], "-b", f"127.0.0.1:{port}", base[-1]]

    os.environ.update(env)
    server = ServerProcess(argv).start()
    time.sleep(1.0)  # let every worker boot
    return server


def keepalive_ms(port: int, requests: int = 6) -> float:
    """Median ms of the requests after the first on one keep-alive connection (new connection
    when the server closes it, as gunicorn's sync workers do). ~40 ms means a Nagle/delayed-ACK
    stall, not app time: the run stops rather than report it as session cost."""
    times: list[float] = []
    sock: socket.socket | None = None
    try:
        for i in range(requests):
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port))
            start = time.perf_counter()
            sock.sendall(b"GET /count HTTP/1.1\r\nHost: bench\r\n\r\n")
            head, body = _read_head(sock)
            length = int(head.get("content-length", "0"))
            while len(body) < length:
                body += sock.recv(65536)
            if i:
                times.append((time.perf_counter() - start) * 1000)
            if head.get("connection") == "close":
                sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
    return statistics.median(times)


def _read_head(sock: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection mid-response")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its descendants."""
    total, stack = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        stack.extend(int(c) for c in children)
    return total


def wrk(port: int, seconds: float, connections: int, script: Path) -> dict[str, float]:
    argv = [
        "wrk",
        "-t",
        str(connections),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
    ]
    out = subprocess.run(
        [*argv, "-s", str(script), f"http://127.0.0.1:{port}/count"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(
    framework: str, variant: str, env: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    server = start_app(framework, {**env, "BENCH_SESSION": variant})
    try:
        assert server.process is not None
        wrk(server.port, 1.0, args.connections, args.script)  # warm-up
        stall = keepalive_ms(server.port)
        if stall > 20:
            sys.exit(
                f"{framework}/{variant}: {stall:.0f} ms per keep-alive request with no load: "
                "a Nagle/delayed-ACK stall (TCP_NODELAY off on the server's sockets), not "
                "session cost; see server_argv"
            )
        cpu = tree_cpu(server.process.pid)
        result = wrk(server.port, args.duration, args.connections, args.script)
        result["cpu_us"] = (tree_cpu(server.process.pid) - cpu) / result["requests"] * 1e6
        result["rps"] = result["requests"] / result["seconds"]
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="pymsm-bench-"))
    args.script = tmp / "session.lua"
    args.script.write_text(LUA)
    nodes = [memcached_server(name=f"n{i}").start() for i in (1, 2)]
    redis = ServerProcess(
        lambda port: ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    ).start()
    env = {
        "MSM_MEMCACHED_NODES": ",".join(f"{n.name}:{n.address}" for n in nodes),
        "BENCH_MEMCACHED": nodes[0].address,
        "BENCH_REDIS": f"redis://{redis.address}/0",
        "BENCH_SQLITE": str(tmp / "sessions.sqlite3"),
    }
    try:
        migrate(env)
        run(args, env)
    finally:
        for server in (*nodes, redis):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def migrate(env: dict[str, str]) -> None:
    code = "import django_bench; from django.core.management import call_command; call_command('migrate', verbosity=0)"
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=BENCH / "apps",
        env={**os.environ, **env, "BENCH_SESSION": "db"},
        check=True,
    )


def run(args: argparse.Namespace, env: dict[str, str]) -> None:
    frameworks = args.only or sorted(VARIANTS)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for framework in frameworks:
            for variant in VARIANTS[framework]:
                result = measure(framework, variant, env, args)
                results.setdefault((framework, variant), []).append(result)
    print(
        f"wrk -t{args.connections} -c{args.connections} -d{args.duration:g}s, "
        f"{args.rounds} rounds, medians; {os.cpu_count()} CPUs"
    )
    print(
        f"{'framework':9} {'session':14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} {'errors':>6} {'vs none':>7} {'vs peer':>7}"
    )
    for framework in frameworks:
        med = {v: _median(results[(framework, v)]) for v in VARIANTS[framework]}
        for variant, m in med.items():
            none, peer = med["none"]["rps"], med[PEER[framework]]["rps"]
            print(
                f"{framework:9} {variant:14} {m['rps']:8.0f} {m['p50'] / 1000:7.2f} {m['p99'] / 1000:7.2f} "
                f"{m['cpu_us']:10.0f} {m['errors']:6.0f} {m['rps'] / none:6.2f}x {m['rps'] / peer:6.2f}x"
            )


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


if __name__ == "__main__":
    main()
