"""The demo cluster's throughput through the embedded balancer vs through nginx in front of the
same app nodes, same run, plus the latency each proxy adds.

    .venv/bin/python bench/demo_balancer.py [--rounds 3] [--duration 5] [--connections 32]

Starts `msm demo` (two memcached nodes, two gunicorn app nodes, the embedded balancer in the
demo's own process, as a user runs it) and nginx with the config from `pymsm.balancer.nginx`
(one worker, round robin, access log off) in front of the same two app nodes. Every request is
`GET /api/session` with the session cookie kept (wrk with a Lua script: one session per wrk
thread; else a Python client, one session per process): a session load, a counter update, a
save, the JSON page. Throughput at --connections, latency at one connection (the proxy's own
cost, not queueing) against one app node directly, through the balancer and through nginx;
medians of --rounds rounds, targets interleaved.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pymsm.balancer import parse_backends
from pymsm.balancer.nginx import full_config
from pymsm.demo.control import find
from pymsm.demo.processes import free_port, listening

PATH = "/api/session"
LUA = """
local cookie = nil
request = function()
  if cookie then return wrk.format(nil, nil, {["Cookie"] = cookie}) end
  return wrk.format()
end
response = function(status, headers, body)
  local set = headers["Set-Cookie"] or headers["set-cookie"]
  if set then cookie = string.match(set, "^([^;]+)") end
end
"""


def wrk(url: str, connections: int, duration: float, script: Path) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms); fails on non-2xx answers (a broken run is no figure)."""
    argv = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    out = subprocess.run(
        [*argv, "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    return rps, _latency(out, "50%"), _latency(out, "99%")


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return match.group(1)


def _latency(out: str, percentile: str) -> float:
    match = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out)
    if match is None:
        raise RuntimeError(f"wrk output without the {percentile} latency:\n{out}")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]


def _client(args: tuple[int, float]) -> list[float]:
    port, duration = args
    conn = http.client.HTTPConnection("127.0.0.1", port)
    cookie: str | None = None
    latencies = []
    deadline = time.perf_counter() + duration
    while (start := time.perf_counter()) < deadline:
        conn.request("GET", PATH, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status} under load")
        cookie = (response.getheader("Set-Cookie") or "").split(";")[0] or cookie
        latencies.append((time.perf_counter() - start) * 1000)
    conn.close()
    return latencies


def python_load(
    url: str, connections: int, duration: float, _script: Path
) -> tuple[float, float, float]:
    """Without wrk: one process per connection, one session each."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with multiprocessing.Pool(connections) as pool:
        runs = pool.map(_client, [(port, duration)] * connections)
    lat = sorted(x for run in runs for x in run)
    return len(lat) / duration, lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]


def start_demo(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(workdir / "demo.log", "wb")  # noqa: SIM115 - closed with the process
    argv = [sys.executable, "-m", "pymsm", "demo", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            find(port)
            return proc, port
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError((workdir / "demo.log").read_text()) from None
            time.sleep(0.1)
    raise RuntimeError("msm demo did not start")


def start_nginx(workdir: Path, apps: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    specs = parse_backends(apps)
    conf = workdir / "nginx.conf"
    conf.write_text(
        full_config(specs, "round_robin", f"127.0.0.1:{port}", workers="1", access_log=False)
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-e", "stderr", "-p", str(workdir), "-c", str(conf)])
    deadline = time.monotonic() + 10
    while not listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    load = wrk if shutil.which("wrk") else python_load
    workdir = Path(tempfile.mkdtemp(prefix="msm-bench-demo-"))
    script = workdir / "cookies.lua"
    script.write_text(LUA)
    demo, demo_port = start_demo(workdir)
    procs = [demo]
    try:
        state = json.load(urllib.request.urlopen(find(demo_port) + "/state"))
        apps = [f"{a['name']}={a['address']}" for a in state["apps"]]
        nginx, nginx_port = start_nginx(workdir, apps)
        procs.insert(0, nginx)
        direct_port = int(state["apps"][0]["address"].rsplit(":", 1)[1])
        targets = {"direct": direct_port, "balancer": demo_port, "nginx": nginx_port}
        results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in targets}
        for _ in range(args.rounds):
            for name, port in targets.items():
                url = f"http://127.0.0.1:{port}{PATH}"
                rps = load(url, args.connections, args.duration, script)[0]
                _, p50, p99 = load(url, 1, args.duration / 2, script)
                results[name].append((rps, p50, p99))
        report(results, load.__name__, args)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(results: dict[str, list[tuple[float, float, float]]], tool: str, args: object) -> None:
    med = {
        n: [statistics.median(c) for c in zip(*rows, strict=True)] for n, rows in results.items()
    }
    print(f"load: {tool}, {vars(args)}, GET {PATH} with its session cookie")
    print(f"{'target':<10} {'req/s':>10} {'p50 ms (c=1)':>14} {'p99 ms (c=1)':>14}")
    for name, (rps, p50, p99) in med.items():
        print(f"{name:<10} {rps:>10.0f} {p50:>14.3f} {p99:>14.3f}")
    print(
        f"balancer/nginx throughput: {med['balancer'][0] / med['nginx'][0]:.2f}x (target >= 0.7x)"
    )
    for name in ("balancer", "nginx"):
        added50, added99 = med[name][1] - med["direct"][1], med[name][2] - med["direct"][2]
        print(f"{name} added latency vs direct: p50 {added50:+.3f} ms, p99 {added99:+.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
