"""pymsm on Redis vs Flask-Session on Redis: the same Flask app, the same redis-server, one run.

    .venv/bin/pip install Flask-Session   # bench-only dependency
    .venv/bin/python bench/redis_vs_flask_session.py [--requests 2000] [--rounds 7]

Two views: `/` increments a counter in the session (every request writes), `/read` only reads
it (the common case: a logged-in user browsing). Flask's test client drives them in-process
(one client, cookies kept), so the figures are the per-request cost of each session layer plus
its Redis round trips. Flask-Session gets a default `redis.Redis` client, as its docs show. pymsm runs as the WSGI middleware around the Flask app (the Flask adapter
is built on another branch); the view reads `request.environ["pymsm.session"]`. Rounds alternate
between the two; the report gives medians, the ratio, and per request the commands each client
sent (from MONITOR, without the calls scripts make) and the commands Redis executed (`INFO
commandstats` deltas, which count a script's own GET and SET too).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, request
from flask import session as flask_session

from pymsm.adapters.wsgi import SessionMiddleware
from pymsm.manager import SessionManager
from pymsm.stores.redis import RedisStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if redis.Redis(port=port).ping():
                return process, port
        except redis.ConnectionError:
            time.sleep(0.02)
    raise SystemExit(f"redis-server did not start on port {port}")


def pymsm_app(port: int, busy_poll: float = 0.0) -> Any:
    app = Flask("pymsm_bench")

    @app.get("/")
    def count() -> str:
        session = request.environ["pymsm.session"]
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/read")
    def read() -> str:
        return str(request.environ["pymsm.session"].get("n", 0))

    url = f"redis://127.0.0.1:{port}/0"
    if not busy_poll:
        app.wsgi_app = SessionMiddleware(app.wsgi_app, memcached_nodes=url)
        return app
    store = RedisStore(url, busy_poll=busy_poll)  # opt-in, store-level only (see docs/redis.md)
    manager = SessionManager(memcached_nodes=url, stores={"default": store})
    app.wsgi_app = SessionMiddleware(app.wsgi_app, manager=manager)
    return app


def flask_session_app(port: int) -> Any:
    from flask_session import Session

    app = Flask("flask_session_bench")
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(host="127.0.0.1", port=port),
        SECRET_KEY="bench",
    )
    Session(app)

    @app.get("/")
    def count() -> str:
        flask_session["n"] = flask_session.get("n", 0) + 1
        return str(flask_session["n"])

    @app.get("/read")
    def read() -> str:
        return str(flask_session.get("n", 0))

    return app


def run_round(app: Any, requests: int, path: str = "/") -> float:
    """Seconds for `requests` requests by one client (one session), checked at the end."""
    client = app.test_client()
    client.get("/")  # the session exists (counter 1) before the timed requests
    start = time.perf_counter()
    for _ in range(requests):
        response = client.get(path)
    elapsed = time.perf_counter() - start
    expected = str(requests + 1 if path == "/" else 1)
    assert response.status_code == 200 and response.text == expected, response.text
    return elapsed


def commands(port: int) -> int:
    stats = redis.Redis(port=port).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def per_request_commands(app: Any, port: int, path: str, requests: int = 200) -> float:
    """Commands Redis executed per request, as INFO commandstats counts them: a Lua script's
    own GET and SET count besides its EVALSHA."""
    before = commands(port)
    run_round(app, requests, path)
    return (commands(port) - before - 1) / requests  # less the request creating the session


def per_request_round_trips(app: Any, port: int, path: str, requests: int = 200) -> float:
    """Commands the client sent per request (each waited for or not), from MONITOR: the lines
    of scripts' own calls (`[0 lua]`) are left out. MONITOR slows the server, so this runs
    apart from the timed rounds."""
    monitor = redis.Redis(port=port).monitor()
    with monitor:
        run_round(app, requests, path)
        redis.Redis(port=port).echo("pymsm-bench-end")
        sent = 0
        while True:
            event = monitor.next_command()
            if event["command"] == "ECHO pymsm-bench-end":
                break
            if event.get("client_type") != "lua":
                sent += 1
    return (sent - 1) / requests  # less the request creating the session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--busy-poll",
        type=float,
        default=0.0,
        metavar="US",
        help="also run pymsm with RedisStore(busy_poll=US microseconds); 0: leave it out",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        process, port = start_redis(workdir)
        try:
            report(port, args.requests, args.rounds, args.busy_poll / 1e6)
        finally:
            process.terminate()
            process.wait(5)


def report(port: int, requests: int, rounds: int, busy_poll: float) -> None:
    apps: dict[str, Callable[[int], Any]] = {
        "pymsm": pymsm_app,
        "flask-session": flask_session_app,
    }
    if busy_poll:
        apps["pymsm busy-poll"] = lambda port: pymsm_app(port, busy_poll)
    built = {name: make(port) for name, make in apps.items()}
    print(f"redis-server on 127.0.0.1:{port}; {rounds} rounds of {requests} requests, one client")
    for path, label in (("/", "counter (writes)"), ("/read", "read only")):
        for app in built.values():
            run_round(app, 200, path)  # warm up: imports, connections, scripts
        times: dict[str, list[float]] = {name: [] for name in built}
        for _ in range(rounds):  # interleaved, so both see the same machine load
            for name, app in built.items():
                times[name].append(run_round(app, requests, path))
        medians = {}
        print(f"{label}:")
        for name, app in built.items():
            medians[name] = statistics.median(times[name]) / requests * 1e6
            executed = per_request_commands(app, port, path)
            sent = per_request_round_trips(app, port, path)
            print(
                f"  {name:16} median {medians[name]:7.1f} us/request, {sent:.1f} commands sent"
                f" and {executed:.1f} executed by Redis per request"
            )
        for name in medians:
            if name.startswith("pymsm"):
                ratio = medians["flask-session"] / medians[name]
                print(f"  {name}/Flask-Session speed ratio: {ratio:.2f}x")


if __name__ == "__main__":
    main()
