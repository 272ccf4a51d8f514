"""`msm balancer --workers N`: N processes on one port sharing health and counters."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import Client, backend_args
from pymsm.balancer import BalancerConfig, BalancerThread, command, parse_backends
from pymsm.exceptions import ConfigError
from support.servers import HOST, ServerProcess


@pytest.fixture
def workers(nodes) -> Iterator[ServerProcess]:
    config = BalancerConfig(
        parse_backends(backend_args(nodes)), port=0, status_path="/_lb", workers=2
    )
    server = ServerProcess(lambda port: command(BalancerConfig(**{**vars(config), "port": port})))
    server.start()
    yield server
    server.stop()


def fresh_backend(port: int) -> str:
    """One request on a new connection (the kernel picks a worker per connection)."""
    client = Client(port)
    try:
        return client.backend()
    finally:
        client.close()


def wait_state(port: int, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the status path until `done(state)` (counters are published every 0.2 s)."""
    deadline = time.monotonic() + 5
    while True:
        state = Client(port).get_json("/_lb")
        if done(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still exists")


def test_both_workers_serve_and_state_sums_them(workers) -> None:
    served = [fresh_backend(workers.port) for _ in range(30)]
    assert set(served) == {"app1", "app2", "app3"}
    state = wait_state(workers.port, lambda s: sum(b["requests"] for b in s["backends"]) == 30)
    assert sum(b["requests"] for b in state["backends"]) == 30
    assert sum(b["responses"].get("2xx", 0) for b in state["backends"]) == 30
    assert len(state["workers"]) == 2
    assert all(w["requests"] > 0 for w in state["workers"]), state["workers"]
    assert state["requests"] >= 30  # plus the status requests themselves


def test_mark_down_through_one_worker_applies_to_all(workers) -> None:
    down = Client(workers.port).request("POST", "/_lb/app1/down")[0]
    assert down.status == 200
    assert "app1" not in {fresh_backend(workers.port) for _ in range(20)}
    state = Client(workers.port).get_json("/_lb")
    assert state["backends"][0]["reason"] == "marked down"
    assert Client(workers.port).request("POST", "/_lb/app1/up")[0].status == 200
    assert "app1" in {fresh_backend(workers.port) for _ in range(20)}


def test_a_passive_failure_seen_by_one_worker_is_skipped_by_all(workers, nodes) -> None:
    nodes[1].kill()
    served = [fresh_backend(workers.port) for _ in range(20)]  # retried past the dead node
    assert "app2" not in served
    state = wait_state(workers.port, lambda s: s["backends"][1]["failures"] >= 1)
    # every worker saw app2 down from the first failure on: the failure count stays small
    assert 1 <= state["backends"][1]["failures"] <= 2, state["backends"][1]
    assert state["backends"][1]["up"] is False


def test_a_dead_worker_is_replaced(workers) -> None:
    state = wait_state(workers.port, lambda s: len(s["workers"]) == 2)
    victim = state["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_gone(victim)  # connections still queued on its socket are reset, as with any server
    state = wait_state(
        workers.port,
        lambda s: len(s["workers"]) == 2 and victim not in [w["pid"] for w in s["workers"]],
    )
    assert victim not in [w["pid"] for w in state["workers"]]
    assert len(state["workers"]) == 2
    assert {fresh_backend(workers.port) for _ in range(9)} == {"app1", "app2", "app3"}


def test_stopping_the_parent_stops_every_worker(workers) -> None:
    state = wait_state(workers.port, lambda s: len(s["workers"]) == 2)
    pids = [w["pid"] for w in state["workers"]]
    workers.stop()
    assert workers.process is not None and workers.process.returncode == 0
    for pid in pids:
        wait_gone(pid)
    with pytest.raises(OSError), socket.create_connection((HOST, workers.port), timeout=1):
        pass


def test_balancer_thread_refuses_workers(nodes) -> None:
    config = BalancerConfig(parse_backends(backend_args(nodes)), port=0, workers=2)
    with pytest.raises(ConfigError, match="workers=2"):
        BalancerThread(config)


def test_a_worker_that_does_not_stop_is_killed_and_the_parent_still_exits(workers) -> None:
    """A stopped (SIGSTOP) worker cannot act on SIGTERM: the supervisor waits STOP_GRACE
    seconds for it, then kills it, instead of waiting forever with the port held."""
    state = wait_state(workers.port, lambda s: len(s["workers"]) == 2)
    pids = [w["pid"] for w in state["workers"]]
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGSTOP)
    try:
        started = time.monotonic()
        workers.stop()  # SIGINT, then SIGKILL after 5 s
        assert workers.process is not None and workers.process.returncode == 0
        assert time.monotonic() - started < 4.5
        for pid in pids:
            wait_gone(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGKILL)  # never leave a stopped process behind


def test_sigterm_with_a_stuck_worker_still_stops_the_supervisor(workers) -> None:
    """SIGTERM (systemd, docker stop) takes the same bounded path as Ctrl-C, out of the wait."""
    state = wait_state(workers.port, lambda s: len(s["workers"]) == 2)
    pids = [w["pid"] for w in state["workers"]]
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGSTOP)
    try:
        assert workers.process is not None
        started = time.monotonic()
        workers.process.send_signal(signal.SIGTERM)
        assert workers.process.wait(10) == 0
        assert time.monotonic() - started < 4.5
        for pid in pids:
            wait_gone(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[1], signal.SIGKILL)
