"""Throughput and memory of the embedded server against real memcached, same machine, same run.

    python bench/server_throughput.py [--seconds 3] [--runs 5] [--event-loop auto]

Load comes from memcaslap (libmemcached-tools) with 100-byte values and 32-byte keys, in a
get-heavy (90% get) and a set-heavy (90% set) mix, at 4 and 32 connections; each cell is the
median TPS of several interleaved runs, and the ratio is embedded / memcached. The CPU columns
are each server's own CPU time (user + system) per operation, medians too: on a shared machine
they vary far less than TPS does. Memory per item is the RSS growth of each server after storing
20 000 items of 1 KB, divided by the item count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
MIXES = {"get-heavy 90/10": 0.9, "set-heavy 10/90": 0.1}
CONNECTIONS = (4, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start(kind: str, event_loop: str = "auto") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if kind == "memcached":
        user = ["-u", "root"] if os.geteuid() == 0 else []
        argv = ["memcached", "-l", HOST, "-p", str(port), "-U", "0", "-t", "1", "-m", "256", *user]
    else:
        argv = [
            sys.executable,
            "-m",
            "pymsm",
            "memcached",
            "-l",
            HOST,
            "-p",
            str(port),
            "-m",
            "256",
            "--event-loop",
            event_loop,
        ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection((HOST, port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{kind} did not start")


def memcaslap(port: int, get_ratio: float, connections: int, seconds: int) -> tuple[float, int]:
    """(TPS, operations) of one memcaslap run."""
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as cfg:
        cfg.write(
            f"key\n32 32 1\nvalue\n100 100 1\ncmd\n0 {1 - get_ratio:.1f}\n1 {get_ratio:.1f}\n"
        )
    out = subprocess.run(
        ["memcaslap", "-s", f"{HOST}:{port}", "-T", "1", "-c", str(connections),
         "-t", f"{seconds}s", "-F", cfg.name],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    os.unlink(cfg.name)
    match = re.search(r"Ops: (\d+) TPS: (\d+)", out.stdout)
    if match is None:
        raise RuntimeError(f"memcaslap printed no TPS: {out.stdout[-300:]} {out.stderr[-300:]}")
    return float(match.group(2)), int(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, port: int, get_ratio: float, connections: int, seconds: int
            ) -> tuple[float, float]:  # fmt: skip
    """(TPS, server CPU µs per operation) of one run."""
    before = cpu_seconds(pid)
    tps, ops = memcaslap(port, get_ratio, connections, seconds)
    return tps, (cpu_seconds(pid) - before) * 1e6 / max(ops, 1)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bytes_per_item(kind: str, count: int = 20_000) -> float:
    process, port = start(kind)
    try:
        with socket.create_connection((HOST, port)) as sock:
            sock.sendall(b"set warm 0 0 1\r\nx\r\n")
            sock.recv(100)
            before = rss(process.pid)
            value = b"v" * 1024
            batch = b"".join(b"set item%06d 0 0 1024\r\n%s\r\n" % (i, value) for i in range(count))
            sock.sendall(batch + b"mn\r\n")
            answer = b""
            while not answer.endswith(b"MN\r\n"):
                answer += sock.recv(1 << 20)
        return (rss(process.pid) - before) / count
    finally:
        process.terminate()
        process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args()
    if shutil.which("memcaslap") is None or shutil.which("memcached") is None:
        print("needs memcached and memcaslap: apt-get install memcached libmemcached-tools")
        return 2
    servers = {"memcached": start("memcached"), "embedded": start("embedded", args.event_loop)}
    print(f"embedded event loop: {args.event_loop}; load average before: {load_average()}")
    print(f"{'mix':<18}{'conns':>6}{'memcached TPS':>15}{'embedded TPS':>14}{'ratio':>7}"
          f"{'CPU µs/op mc':>14}{'embedded':>10}")  # fmt: skip
    try:
        for mix, ratio in MIXES.items():
            for connections in CONNECTIONS:
                tps: dict[str, list[float]] = {kind: [] for kind in servers}
                cpu: dict[str, list[float]] = {kind: [] for kind in servers}
                for _ in range(args.runs):  # interleaved, so noise hits both alike
                    for kind, (process, port) in servers.items():
                        rate, used = measure(process.pid, port, ratio, connections, args.seconds)
                        tps[kind].append(rate)
                        cpu[kind].append(used)
                real, ours = (statistics.median(tps[k]) for k in ("memcached", "embedded"))
                real_cpu, our_cpu = (statistics.median(cpu[k]) for k in ("memcached", "embedded"))
                print(f"{mix:<18}{connections:>6}{real:>15.0f}{ours:>14.0f}{ours / real:>7.2f}"
                      f"{real_cpu:>14.1f}{our_cpu:>10.1f}")  # fmt: skip
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
    print(f"load average after: {load_average()}")
    real_item, our_item = bytes_per_item("memcached"), bytes_per_item("embedded")
    print(f"\nmemory per 1 KB item (RSS delta / 20000 items): memcached {real_item:.0f} B, "
          f"embedded {our_item:.0f} B ({our_item / real_item:.2f}x)")  # fmt: skip
    return 0


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
