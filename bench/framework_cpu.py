"""The framework benchmark's apps called in-process through WSGI, no HTTP server: CPU and wall
time per request of the counter with each session back end, against real memcached.

bench/frameworks.py measures whole servers under wrk, where gunicorn, wrk and memcached share
the 2 CPUs with the app. This shows what the session layer itself costs the app's process
(`time.process_time`: user and system CPU, so a store round trip's system calls count).

    python bench/framework_cpu.py [--framework flask|django] [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from manager_overhead import start_memcached

APPS = Path(__file__).parent / "apps"
VARIANTS = {
    "flask": ["none", "cookie", "flask-session", "pymsm"],
    "django": ["none", "cache", "pymsm"],
}
COOKIES = {"flask": "session=", "django": "sessionid="}


def child(framework: str, requests: int, rounds: int) -> None:
    """Runs in a subprocess per variant (each app configures its framework once)."""
    sys.path.insert(0, str(APPS))
    if framework == "flask":
        import flask_bench

        app: Any = flask_bench.app
    else:
        import django_bench

        app = django_bench.application
    cookie = [""]

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        for name, value in headers:
            value = value.strip()
            if name.lower() == "set-cookie" and value.startswith(COOKIES[framework]):
                cookie[0] = value.split(";")[0]

    def request() -> bytes:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/count",
            "QUERY_STRING": "",
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "localhost",
            "HTTP_COOKIE": cookie[0],
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
        }
        return b"".join(app(environ, start_response))

    for _ in range(200):  # warm up, and the session exists from here on
        request()
    before = int(request())
    cpu, wall = [], []
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        for _ in range(requests):
            request()
        cpu.append((time.process_time() - c) / requests * 1e6)
        wall.append((time.perf_counter() - w) / requests * 1e6)
    counted = int(request()) - before  # one session all along: the counter went up each time
    print(
        json.dumps(
            {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "counted": counted}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", choices=sorted(VARIANTS), default="django")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.framework, args.requests, args.rounds)
        return
    servers = [start_memcached() for _ in range(2)]
    ports = [port for _, port in servers]
    try:
        rows = {}
        for variant in VARIANTS[args.framework]:
            env = {
                **os.environ,
                "BENCH_SESSION": variant,
                "BENCH_MEMCACHED": f"127.0.0.1:{ports[0]}",
                "MSM_MEMCACHED_NODES": f"n1:127.0.0.1:{ports[0]},n2:127.0.0.1:{ports[1]}",
            }
            argv = [sys.executable, __file__, "--framework", args.framework, "--child", variant]
            argv += ["--requests", str(args.requests), "--rounds", str(args.rounds)]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        none = rows["none"]["cpu"]
        print(
            f"{args.framework}, in-process WSGI, medians of {args.rounds} rounds x {args.requests}"
        )
        print(f"{'session':<15}{'CPU us/req':>12}{'wall us/req':>13}{'CPU over none':>15}")
        for variant, row in rows.items():
            expected = 0 if variant == "none" else args.requests * args.rounds + 1
            if row["counted"] != expected:
                raise SystemExit(f"{variant}: the counter moved {row['counted']}, not {expected}")
            extra = "" if variant == "none" else f"{row['cpu'] - none:>15.1f}"
            print(f"{variant:<15}{row['cpu']:>12.1f}{row['wall']:>13.1f}{extra}")
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
