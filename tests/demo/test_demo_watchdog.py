"""The demo's nodes die with the demo, even when it is SIGKILLed (pymsm.demo.watchdog)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from demo_helpers import wait_until

from pymsm.demo.control import call, find, state_file
from pymsm.demo.processes import Watchdog, free_port, listening

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sleeper() -> subprocess.Popen[bytes]:
    """A process in its own group, as the demo starts its nodes."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )


def test_the_watchdog_kills_what_it_watches_when_the_pipe_closes_without_done() -> None:
    node, spared = sleeper(), sleeper()
    watchdog = Watchdog()
    try:
        watchdog.watch(node.pid)
        watchdog.watch(spared.pid)
        watchdog.forget(spared.pid)  # reaped by the demo: its id must never be killed later
        assert watchdog._write is not None and watchdog.process is not None
        os.close(watchdog._write)  # what the kernel does when the demo dies
        watchdog._write = None
        assert watchdog.process.wait(5) == 0
        assert node.wait(5) == -signal.SIGKILL
        assert spared.poll() is None
    finally:
        for proc in (node, spared):
            proc.kill()
            proc.wait()


def test_a_clean_stop_lets_the_watchdog_go_without_killing() -> None:
    node = sleeper()
    watchdog = Watchdog()
    try:
        watchdog.watch(node.pid)
        watchdog.close()
        assert watchdog.process is not None and watchdog.process.returncode == 0
        time.sleep(0.2)
        assert node.poll() is None
    finally:
        node.kill()
        node.wait()


def test_a_sigkilled_demo_leaves_no_node_running() -> None:
    port = free_port()
    argv = [sys.executable, "-m", "pymsm", "demo", "--port", str(port), "--embedded-memcached"]
    demo = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        wait_until(lambda: state_file(port).exists() or demo.poll() is not None, 30, "demo up")
        assert demo.poll() is None
        state = call(find(port))
        nodes = [*state["memcached"], *state["apps"]]
        pids = [n["pid"] for n in nodes]
        ports = [int(n["address"].rsplit(":", 1)[1]) for n in nodes]
        assert len(pids) == 4 and all(pids)
        demo.kill()
        demo.wait(5)
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, "nodes gone")
        assert not any(listening(p) for p in ports)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(5)
        for pid in pids:  # never leave nodes behind, whatever failed
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            state_file(port).unlink()
