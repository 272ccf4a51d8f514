"""Per-request cost of the manager in-process (no HTTP) for a 1 KB session, against the floor of
the raw client doing the minimum on the same memcached servers, in the same run.

    python bench/manager_overhead.py [--requests 2000] [--rounds 7]

Floors: unchanged = one get_many of record + validity; changed = that plus one set of the
record and noreply writes of validity, backup record and backup validity. Round trips are
counted by wrapping the stores (a noreply write is not a round trip).

"floor + decode" is the unchanged floor plus decoding the record it read (record header and
JSON attributes, pymsm's own functions): the least any session manager on this client must
do. The targets are against the plain floor; the extra line shows how much of pymsm's ratio is
decoding and how much is the rest of the request (docs/design.md, "Fifth session").
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from pymemcache.client.base import Client

from pymsm import SessionManager
from pymsm.stores.memcached import MemcachedStore

PAYLOAD = {f"key{i:02d}": "v" * 40 for i in range(20)}  # ~1 KB encoded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_memcached() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("memcached")
    if binary is None:
        raise SystemExit("memcached is not installed: apt-get install memcached")
    port = free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", *user]
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    raise SystemExit("memcached did not start")


def request_shapes(
    manager: SessionManager, sid: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The two requests the per-request benchmarks time (also bench/cpu_per_request.py): one
    that reads an attribute and changes nothing, one that increments the counter `n`."""

    def unchanged() -> None:
        s = manager.open(sid)
        _ = s["key00"]
        manager.save(s)

    def changed() -> None:
        s = manager.open(sid)
        s["n"] = s["n"] + 1
        manager.save(s)

    return unchanged, changed


class Counting:
    """Wraps a store and counts synchronous round trips."""

    def __init__(self, store: MemcachedStore) -> None:
        self.store = store
        self.sync = 0
        self.noreply = 0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)

        def call(*args: Any) -> Any:
            if name in ("set", "delete", "touch") and args[-1] is True:
                self.noreply += 1
            else:
                self.sync += 1
            return method(*args)

        return call


def per_request_us(fn: Callable[[], None], requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        fn()
    return (time.perf_counter() - start) / requests * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    servers = [start_memcached() for _ in range(2)]
    try:
        run(args.requests, args.rounds, [port for _, port in servers])
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait()


def run(requests: int, rounds: int, ports: list[int]) -> None:
    nodes = f"n1:127.0.0.1:{ports[0]},n2:127.0.0.1:{ports[1]}"
    manager = SessionManager(memcached_nodes=nodes)
    stores = manager.stores
    # the counting wrappers only count (after the timed rounds): timed, their per-call
    # __getattr__ and closure were charged to pymsm
    counters = {name: Counting(store) for name, store in stores.items()}  # type: ignore[arg-type]
    session = manager.open(None)
    session.update(PAYLOAD)
    session["n"] = 0
    manager.save(session)
    sid = session.id
    record_key, validity_key = sid, "validity:" + sid
    raw_record = stores[session.sid.node].get_many([record_key])[record_key]
    print(f"record size: {len(raw_record)} bytes")
    # the floor reads the node that holds the session (a new session lands on a random node:
    # reading the other one measured a miss, a 5-byte answer, in half of the runs)
    primary = 0 if session.sid.node == "n1" else 1
    client = Client(("127.0.0.1", ports[primary]), no_delay=True)
    backup = Client(("127.0.0.1", ports[1 - primary]), no_delay=True)
    if client.get_many([record_key, validity_key]).get(record_key) != raw_record:
        raise SystemExit("the floor does not read the session's record: fix the benchmark")

    unchanged, changed = request_shapes(manager, sid)

    def floor_unchanged() -> None:
        client.get_many([record_key, validity_key])

    record_format, codec = manager.format, manager.codec

    def floor_decoded() -> None:
        raw = client.get_many([record_key, validity_key])[record_key]
        codec.decode(record_format.decode(raw).payload)

    def floor_changed() -> None:
        client.get_many([record_key, validity_key])
        client.set("floor:" + record_key, raw_record, 1800, noreply=False)
        client.set("floor:" + validity_key, b"x" * 20, 1800, noreply=True)
        backup.set("floor:bak:" + record_key, raw_record, 1800, noreply=True)
        backup.set("floor:bak:" + validity_key, b"x" * 20, 1800, noreply=True)

    cases = {
        "unchanged": unchanged,
        "changed": changed,
        "floor unchanged": floor_unchanged,
        "floor + decode": floor_decoded,
        "floor changed": floor_changed,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        per_request_us(fn, requests // 10)  # warm up
    for _ in range(rounds):
        for name, fn in cases.items():
            results[name].append(per_request_us(fn, requests))
    med = {name: statistics.median(values) for name, values in results.items()}
    manager.stores = counters  # type: ignore[assignment]
    unchanged()
    trips_unchanged = (
        sum(c.sync for c in counters.values()),
        sum(c.noreply for c in counters.values()),
    )
    for counter in counters.values():
        counter.sync = counter.noreply = 0
    changed()
    trips_changed = (
        sum(c.sync for c in counters.values()),
        sum(c.noreply for c in counters.values()),
    )
    print(f"{'case':<18}{'median us':>12}{'ratio':>8}   round trips (sync, noreply)")
    print(f"{'floor unchanged':<18}{med['floor unchanged']:>12.1f}")
    print(
        f"{'floor + decode':<18}{med['floor + decode']:>12.1f}"
        f"{med['floor + decode'] / med['floor unchanged']:>8.2f}"
    )
    print(
        f"{'unchanged':<18}{med['unchanged']:>12.1f}{med['unchanged'] / med['floor unchanged']:>8.2f}"
        f"   {trips_unchanged}"
    )
    print(f"{'floor changed':<18}{med['floor changed']:>12.1f}")
    print(
        f"{'changed':<18}{med['changed']:>12.1f}{med['changed'] / med['floor changed']:>8.2f}"
        f"   {trips_changed}"
    )
    client.close()
    backup.close()
    manager.close()


if __name__ == "__main__":
    main()
