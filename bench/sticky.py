"""Per-request cost of an unchanged 10 KB session: sticky vs non-sticky, same memcached cluster.

In-process SessionManager, no HTTP: each request opens the session, reads one attribute, saves
and builds the cookie header, as the WSGI middleware does. Two memcached nodes on loopback.
Prints the median time per request over many rounds, the ratio sticky / non-sticky, and the
bytes read from memcached per request. "sticky, validity every request" measures
access_time_resolution=0 (the validity rewritten on every request, as MSM does). "validity get
alone" is the sticky session's 20-byte validity read on its own, with no session code around
it: the least a sticky request that keeps invariants 5 and 6 can cost (sticky.md, "Speed").

Two session shapes of about 10 KB each (SHAPES), because what sticky mode saves is the
non-sticky load's transfer and decode, and the decode depends on the shape:
- "structured": what apps keep in a session: a cart of 72 items (dicts with a nested dict),
  roles, preferences, a CSRF token and a datetime (a tagged value of the json codec);
- "flat string": one 10 KB hex string beside the user name, the cheapest data to decode there
  is (the json codec's flat fast path on orjson), so the best case for non-sticky mode.

    python bench/sticky.py [--requests 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
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


def structured() -> dict[str, Any]:
    cart = [
        {
            "sku": f"SKU-{i:05d}",
            "name": f"Item number {i} with a longer product title",
            "qty": i % 3 + 1,
            "price_cents": 1999 + i,
            "options": {"color": "blue", "size": "M"},
        }
        for i in range(72)
    ]
    return {
        "user": "ann",
        "user_id": 12345,
        "roles": ["customer", "beta"],
        "cart": cart,
        "prefs": {"lang": "en", "tz": "Europe/Berlin", "theme": "dark"},
        "csrf": secrets.token_hex(16),
        "login_at": datetime.datetime(2026, 11, 21, 5, 0, 0),
    }


def validity_get(m: SessionManager, cookie: str) -> Callable[[], object]:
    """The sticky session's validity read on its own, on its node's store (bytes not counted)."""
    session = m.load(cookie)
    node = session.sid.node
    assert node is not None  # the cluster's nodes have ids
    store = m.stores[node]
    assert isinstance(store, MemcachedStore)
    key = m.context().keys(session.sid).validity
    if not MemcachedStore.get_many(store, [key]):
        raise SystemExit(f"no validity record under {key!r}: fix the benchmark")
    return lambda: MemcachedStore.get_many(store, [key])


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def flat_string() -> dict[str, Any]:
    return {"user": "ann", "blob": secrets.token_hex(5000)}


SHAPES = {"structured": structured, "flat string": flat_string}  # ~10 KB each, see the docstring


def main() -> None:
    args = arguments(__doc__ or "")
    with memcached_cluster() as nodes:
        modes: dict[str, dict[str, Any]] = {
            "non-sticky": {"sticky": False},
            "sticky": {"sticky": True},
            "sticky, validity every request": {"sticky": True, "access_time_resolution": 0},
        }
        managers, cookies, sizes = {}, {}, {}
        for shape, data in SHAPES.items():
            for mode, settings in modes.items():
                m = managers[shape, mode] = manager(nodes, **settings)
                session = m.load(None)
                session.update(data())
                m.save(session)
                cookies[shape, mode] = session.id
                sizes[shape] = len(session.record.payload) if session.record else 0
                measure(m, session.id, 200)  # warm up connections
        times: dict[tuple[str, str], list[float]] = {case: [] for case in managers}
        reads: dict[tuple[str, str], float] = {}
        bare = {
            shape: validity_get(managers[shape, "sticky"], cookies[shape, "sticky"])
            for shape in SHAPES
        }
        bare_times: dict[str, list[float]] = {shape: [] for shape in SHAPES}
        for _ in range(args.rounds):  # interleaved rounds: drift hits every case alike
            for case, m in managers.items():
                per_request, bytes_read = measure(m, cookies[case], args.requests)
                times[case].append(per_request)
                reads[case] = bytes_read
            for shape, read in bare.items():
                bare_times[shape].append(per_call(read, args.requests))
        medians = {case: statistics.median(values) for case, values in times.items()}
        print(f"medians of {args.rounds} rounds x {args.requests} requests")
        for shape in SHAPES:
            print(f"{shape} session ({sizes[shape]} bytes of encoded attributes):")
            for mode in modes:
                case = (shape, mode)
                print(
                    f"  {mode:>30}: {medians[case] * 1e6:7.1f} us/request, "
                    f"{reads[case]:7.0f} bytes read/request"
                )
            base = medians[shape, "non-sticky"]
            ratio = medians[shape, "sticky"] / base
            each = medians[shape, "sticky, validity every request"] / base
            alone = statistics.median(bare_times[shape])
            print(f"  {'validity get alone':>30}: {alone * 1e6:7.1f} us/request")
            print(f"  sticky / non-sticky = {ratio:.2f} (target <= 0.60)")
            print(f"  sticky, validity every request / non-sticky = {each:.2f}")
            print(
                f"  validity get alone / non-sticky = {alone / base:.2f} (the least sticky can be)"
            )
        for m in managers.values():
            m.close()


if __name__ == "__main__":
    main()
