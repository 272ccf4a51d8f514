"""Per-request cost of an unchanged 10 KB session: sticky vs non-sticky, same memcached cluster.

In-process SessionManager, no HTTP: each request opens the session, reads one attribute, saves
and builds the cookie header, as the WSGI middleware does. Two memcached nodes on loopback.
Prints the median time per request over many rounds, the ratio sticky / non-sticky, and the
bytes read from memcached per request. "sticky, validity every request" measures
access_time_resolution=0 (the validity rewritten on every request, as MSM does).

    python bench/sticky.py [--requests 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pymsm import SessionManager
from pymsm.config import Config
from pymsm.stores.memcached import MemcachedStore


class CountingStore(MemcachedStore):
    """Counts bytes returned by reads (values only, as memcached sends them)."""

    bytes_read = 0

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        # the default locking mode (optimistic) reads with CAS tokens
        found = super().gets_many(keys)
        CountingStore.bytes_read += sum(len(v) for v, _ in found.values())
        return found

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = super().get_many(keys)
        CountingStore.bytes_read += sum(len(v) for v in found.values())
        return found


def start_memcached() -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    user = ["-u", "root"] if os.geteuid() == 0 else []
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", *user]
    process = subprocess.Popen(argv)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("memcached did not start")


@contextmanager
def memcached_cluster(count: int = 2) -> Iterator[str]:
    """Start `count` memcached nodes on loopback; yields `memcached_nodes` for them."""
    servers = [start_memcached() for _ in range(count)]
    try:
        yield ",".join(f"n{i + 1}:127.0.0.1:{port}" for i, (_, port) in enumerate(servers))
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(5)


def arguments(doc: str) -> argparse.Namespace:
    """--requests and --rounds, with the defaults of every sticky benchmark."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    return parser.parse_args()


def manager(nodes: str, sticky: bool, **settings: Any) -> SessionManager:
    config = Config(
        memcached_nodes=nodes, failover_nodes="n1", sticky=sticky, route="app1", **settings
    )
    stores = {n.name: CountingStore(n, config.operation_timeout) for n in config.nodes}
    return SessionManager(config, stores=stores)


def request(m: SessionManager, cookie: str) -> Any:
    session = m.open(cookie)
    value = session["user"]
    m.save(session)
    m.set_cookie(session, cookie)
    return value


def measure(m: SessionManager, cookie: str, requests: int) -> tuple[float, float]:
    """(seconds per request, bytes read per request) for one round."""
    CountingStore.bytes_read = 0
    start = time.perf_counter()
    for _ in range(requests):
        request(m, cookie)
    elapsed = time.perf_counter() - start
    return elapsed / requests, CountingStore.bytes_read / requests


def main() -> None:
    args = arguments(__doc__ or "")
    with memcached_cluster() as nodes:
        managers = {
            "non-sticky": manager(nodes, False),
            "sticky": manager(nodes, True),
            "sticky, validity every request": manager(nodes, True, access_time_resolution=0),
        }
        cookies = {}
        for name, m in managers.items():
            session = m.load(None)
            session["user"] = "ann"
            session["blob"] = secrets.token_hex(5000)  # 10 KB of attributes
            m.save(session)
            cookies[name] = session.id
            measure(m, session.id, 200)  # warm up connections
        times: dict[str, list[float]] = {name: [] for name in managers}
        reads: dict[str, float] = {}
        for _ in range(args.rounds):  # interleaved rounds: drift hits both alike
            for name, m in managers.items():
                per_request, bytes_read = measure(m, cookies[name], args.requests)
                times[name].append(per_request)
                reads[name] = bytes_read
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name in managers:
            print(
                f"{name:>29}: {medians[name] * 1e6:7.1f} us/request (median of {args.rounds} "
                f"rounds x {args.requests}), {reads[name]:7.0f} bytes read/request"
            )
        base = medians["non-sticky"]
        print(f"sticky / non-sticky = {medians['sticky'] / base:.2f} (target <= 0.60)")
        each = medians["sticky, validity every request"] / base
        print(f"sticky, validity every request / non-sticky = {each:.2f}")
        for m in managers.values():
            m.close()


if __name__ == "__main__":
    main()
