"""Start two memcached nodes and the WSGI counter on two gunicorn processes, to try failover by
hand. Ctrl-C stops everything.

    python examples/run_wsgi_counter.py [--base-port 9001]

Open both app URLs in turn: the session id and the counter carry over between the processes.
Kill the memcached node named in the id (the pid is printed) and reload: same data, new id
naming the other node.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def memcached_argv(port: int) -> list[str]:
    binary = shutil.which("memcached")
    if binary:
        user = ["-u", "root"] if os.geteuid() == 0 else []
        return [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", *user]
    # no memcached installed: pymsm's embedded memcached-compatible server
    return [sys.executable, "-m", "pymsm", "memcached", "-l", "127.0.0.1", "-p", str(port)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-port", type=int, default=9001, help="first app port (default 9001)")
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nodes = []
        for i in (1, 2):
            port = free_port()
            proc = subprocess.Popen(memcached_argv(port))
            procs.append(proc)
            wait_for(port, proc)
            nodes.append(f"n{i}:127.0.0.1:{port}")
            print(f"memcached n{i}: 127.0.0.1:{port} (pid {proc.pid})")
        env = {**os.environ, "MSM_MEMCACHED_NODES": ",".join(nodes)}
        for i in (1, 2):
            port = args.base_port + i - 1
            argv = [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--chdir",
                str(HERE),
                "wsgi_counter:app",
            ]
            proc = subprocess.Popen(argv, env={**env, "APP_NAME": f"app{i}"})
            procs.append(proc)
            wait_for(port, proc)
            print(f"app{i}: http://127.0.0.1:{port}/ (pid {proc.pid})")
        print("Ctrl-C stops everything.")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
