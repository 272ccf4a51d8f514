"""Cost of the locking modes: an in-process SessionManager against two real memcached nodes.

    .venv/bin/python bench/locking.py [--requests 300] [--rounds 41] [--sessions 200]

1. Non-conflicting traffic (one thread, many sessions, each request reads and writes one key):
   requests/s per mode, median of the rounds; modes run back to back in each round (rotating
   who goes first) and the ratio to `none` is the median of the per-round ratios, so load from
   other processes cancels out. Fails (exit 1) if optimistic/none is below 0.95.
2. Contended traffic (threads on ONE session, each incrementing its own key): conflicts and
   retries under `optimistic`, lock timeouts under `all`, and whether any update was lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pymsm import SessionManager

MODES = ("none", "optimistic", "all")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def memcached(count: int) -> Iterator[str]:
    """Start `count` memcached servers on free loopback ports -> the memcached_nodes setting."""
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    user = ["-u", "root"] if os.geteuid() == 0 else []
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen([binary, "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-t", "1", *user])
        for p in ports
    ]
    try:
        for port in ports:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.01)
        yield ",".join(f"n{i + 1}:127.0.0.1:{p}" for i, p in enumerate(ports))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)


def one_request(mgr: SessionManager, sid: str, key: str) -> None:
    session = mgr.open(sid, "POST", "/bench")
    try:
        session[key] = session.get(key, 0) + 1
        mgr.save(session)
    finally:
        mgr.release(session)


def throughput(mgr: SessionManager, sids: list[str], requests: int) -> float:
    started = time.perf_counter()
    for i in range(requests):
        one_request(mgr, sids[i % len(sids)], "k")
    return requests / (time.perf_counter() - started)


def uncontended(nodes: str, args: argparse.Namespace) -> dict[str, float]:
    managers = {m: SessionManager(memcached_nodes=nodes, locking_mode=m) for m in MODES}
    seed = managers["none"]
    sids = []
    for _ in range(args.sessions):
        session = seed.load(None)
        session["k"] = 0
        seed.save(session)
        sids.append(session.id)
    for mgr in managers.values():
        throughput(mgr, sids, 200)  # warm up connections
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    for round_ in range(args.rounds):
        for mode in MODES[round_ % 3 :] + MODES[: round_ % 3]:  # no mode always goes first
            rates[mode].append(throughput(managers[mode], sids, args.requests))
    for mgr in managers.values():
        mgr.close()
    # paired: each round's modes ran back to back, so a ratio per round cancels machine drift
    result = {m: statistics.median(r) for m, r in rates.items()}
    for mode in MODES:
        result[mode + "/none"] = statistics.median(
            a / b for a, b in zip(rates[mode], rates["none"], strict=True)
        )
    return result


def contended(nodes: str, mode: str, threads: int, rounds: int) -> dict[str, int]:
    mgr = SessionManager(memcached_nodes=nodes, locking_mode=mode, lock_wait_timeout="5s")
    session = mgr.load(None)
    session["start"] = 1
    mgr.save(session)
    sid = session.id
    barrier = threading.Barrier(threads)

    def client(i: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            one_request(mgr, sid, f"k{i}")

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = int(threads * rounds / (time.perf_counter() - started))
    data = mgr.load(sid).data
    lost = sum(rounds - data.get(f"k{i}", 0) for i in range(threads))
    stats = {k: v for k, v in mgr.stats.items() if k.startswith(("cas_", "lock_"))}
    mgr.close()
    return {"requests": threads * rounds, "req/s": rate, "lost_updates": lost, **stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with memcached(2) as nodes:
        rates = uncontended(nodes, args)
        print(f"non-conflicting, {args.requests} requests x {args.rounds} rounds (median req/s):")
        for mode in MODES:
            print(f"  {mode:<11} {rates[mode]:8.0f}  {rates[mode + '/none']:.3f}x none")
        for mode in ("optimistic", "all", "none"):
            result = contended(nodes, mode, args.threads, 25)
            print(f"contended, {args.threads} threads on one session, {mode}: {result}")
    ratio = rates["optimistic/none"]
    print(f"optimistic / none = {ratio:.3f} (required >= 0.95)")
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
