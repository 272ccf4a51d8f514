"""What one memcached operation costs this machine: client user and system CPU, wall time, and
the server's CPU, for a waited `get` and a noreply `set` of 1 KB with raw pymemcache.

The ratio benchmarks (manager_overhead.py, sticky.py, frameworks.py) are decided by how many
store operations a request makes and by what each costs here; this prints the second number.

    python bench/round_trip_cost.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from manager_overhead import start_memcached
from pymemcache.client.base import Client


def server_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(fn: Callable[[], object], calls: int, pid: int) -> tuple[float, float, float, float]:
    """(client user, client system, wall, server CPU) in µs per call."""
    before, server, wall = os.times(), server_cpu(pid), time.perf_counter()
    for _ in range(calls):
        fn()
    wall = time.perf_counter() - wall
    after = os.times()
    per = 1e6 / calls
    return (
        (after.user - before.user) * per,
        (after.system - before.system) * per,
        wall * per,
        (server_cpu(pid) - server) * per,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    process, port = start_memcached()
    try:
        client = Client(("127.0.0.1", port), no_delay=True)
        client.set("k", b"x" * 1000, noreply=False)
        cases = {
            "waited get": lambda: client.get("k"),
            "noreply set": lambda: client.set("k2", b"x" * 1000, noreply=True),
        }
        rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in cases}
        for _ in range(args.rounds):  # interleaved
            for name, fn in cases.items():
                rows[name].append(measure(fn, args.calls, process.pid))
        print(
            f"{'per operation, µs':<18}{'client user':>12}{'client sys':>12}{'wall':>8}{'server':>8}"
        )
        for name, values in rows.items():
            med = [statistics.median(v[i] for v in values) for i in range(4)]
            print(f"{name:<18}{med[0]:>12.1f}{med[1]:>12.1f}{med[2]:>8.1f}{med[3]:>8.1f}")
        print("(medians of interleaved rounds; the server's CPU is read from /proc, 10 ms ticks)")
        client.close()
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
