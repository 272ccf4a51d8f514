"""pymsm's own CPU per request, without the network: the manager on memory stores.

The other benchmarks time whole requests against real servers, where the loopback round trip
(25-120 us on the shared 2-core machine, changing through the day) swamps what pymsm itself
costs. This one runs the same request shapes as bench/manager_overhead.py and bench/sticky.py
on in-process memory stores and measures CPU time (time.process_time), so the figure moves
only when pymsm's code does. Baseline in the same run: the codec work a request cannot avoid
(decode the 1 KB JSON payload; decode and encode it when it changed).

    python bench/cpu_per_request.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from collections.abc import Callable

from manager_overhead import PAYLOAD, request_shapes

from pymsm import SessionManager
from pymsm.config import Config
from pymsm.stores.memory import MemoryStore

NODES = "n1:127.0.0.1:1,n2:127.0.0.1:2"


def manager(sticky: bool = False) -> SessionManager:
    config = Config(memcached_nodes=NODES, sticky=sticky, route="app1" if sticky else None)
    return SessionManager(config, stores={"n1": MemoryStore(), "n2": MemoryStore()})


def stored(m: SessionManager, data: dict[str, object]) -> str:
    session = m.load(None)
    session.update(data)
    m.save(session)
    return session.id


def cases() -> dict[str, Callable[[], object]]:
    plain, sticky = manager(), manager(sticky=True)
    sid = stored(plain, {**PAYLOAD, "n": 0})
    sticky_sid = stored(sticky, {"user": "ann", "blob": secrets.token_hex(5000)})
    encoded = json.dumps({**PAYLOAD, "n": 0}, separators=(",", ":")).encode()

    unchanged, changed = request_shapes(plain, sid)

    def sticky_unchanged() -> None:
        session = sticky.open(sticky_sid)
        _ = session["user"]
        sticky.save(session)
        sticky.set_cookie(session, sticky_sid)

    def codec_read() -> None:
        json.loads(encoded)

    def codec_write() -> None:
        data = json.loads(encoded)
        data["n"] += 1
        json.dumps(data, separators=(",", ":")).encode()

    return {
        "baseline: json decode": codec_read,
        "baseline: json decode+encode": codec_write,
        "non-sticky unchanged": unchanged,
        "non-sticky changed": changed,
        "sticky unchanged": sticky_unchanged,
    }


def cpu_us(fn: Callable[[], object], requests: int) -> float:
    start = time.process_time()
    for _ in range(requests):
        fn()
    return (time.process_time() - start) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    fns = cases()
    for fn in fns.values():
        cpu_us(fn, args.requests // 10)  # warm up
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):  # interleaved: drift hits every case alike
        for name, fn in fns.items():
            results[name].append(cpu_us(fn, args.requests))
    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"CPU per request, medians of {args.rounds} rounds x {args.requests} (memory stores)")
    for name, value in med.items():
        print(f"  {name:<30}{value:8.2f} us")
    read, write = med["baseline: json decode"], med["baseline: json decode+encode"]
    print(f"non-sticky unchanged / json decode:      {med['non-sticky unchanged'] / read:6.1f}x")
    print(f"non-sticky changed / json decode+encode: {med['non-sticky changed'] / write:6.1f}x")


if __name__ == "__main__":
    main()
