"""ASGI lifespan in real uvicorn against two real memcached nodes: on a graceful shutdown the
middleware closes the stores' connections after the app's own shutdown handlers ran (memcached's
`curr_connections` counts them still open there, and gone once pymsm passed the shutdown on);
with `--lifespan off` sessions work the same. In-process: the messages pass unchanged, a failed
shutdown closes too, and a store that fails to close does not hold the server's shutdown up."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pymsm.adapters.asgi import SessionMiddleware
from pymsm.async_manager import AsyncSessionManager
from pymsm.stores.memory import AsyncMemoryStore
from support.servers import ServerProcess, curr_connections

Nodes = Callable[[int], list[ServerProcess]]
HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


def uvicorn(*extra: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "--port", str(port)),
        *("--log-level", "warning", *extra, "asgi_lifespan_app:app"),
    ]


def connections(nodes: list[ServerProcess]) -> dict[str, int]:
    async def count() -> dict[str, int]:
        return {node.name: await curr_connections(node.address) for node in nodes}

    return asyncio.run(count())


def serve(nodes: list[ServerProcess], tmp_path: Path, *extra: str) -> tuple[ServerProcess, Path]:
    report = tmp_path / "lifespan.json"
    env = {
        "MSM_MEMCACHED_NODES": ",".join(f"{n.name}:{n.address}" for n in nodes),
        "LIFESPAN_REPORT": str(report),
        "LIFESPAN_BASELINE": json.dumps(connections(nodes)),
        "PYTHONPATH": str(TESTS),
    }
    return ServerProcess(uvicorn(*extra), env=env).start(), report


def count_three_times(app: ServerProcess) -> None:
    with httpx.Client(base_url=f"http://{app.address}") as client:
        assert [client.get("/count").json()["count"] for _ in range(3)] == [1, 2, 3]


@pytest.mark.integration
@pytest.mark.slow
def test_graceful_shutdown_closes_the_store_connections(
    memcached_nodes: Nodes, tmp_path: Path
) -> None:
    nodes = memcached_nodes(2)
    baseline = connections(nodes)
    app, report = serve(nodes, tmp_path)
    count_three_times(app)  # primary on one node, backup on the other: both connected
    assert connections(nodes) == {name: n + 1 for name, n in baseline.items()}
    app.stop()  # SIGINT: uvicorn's graceful shutdown, lifespan.shutdown
    assert app.process is not None and app.process.returncode == 0
    noted = json.loads(report.read_text())
    assert noted["startup"] is True
    assert noted["app_shutdown"] == {name: n + 1 for name, n in baseline.items()}
    assert noted["after_pymsm_shutdown"] == baseline
    assert connections(nodes) == baseline


@pytest.mark.integration
@pytest.mark.slow
def test_sessions_work_without_lifespan_events(memcached_nodes: Nodes, tmp_path: Path) -> None:
    nodes = memcached_nodes(2)
    baseline = connections(nodes)
    app, report = serve(nodes, tmp_path, "--lifespan", "off")
    count_three_times(app)
    assert connections(nodes) == {name: n + 1 for name, n in baseline.items()}
    app.stop()
    assert app.process is not None and app.process.returncode == 0
    assert not report.exists()  # no startup, no shutdown: the app never saw a lifespan scope
    assert connections(nodes) == baseline  # the process exited; the kernel closed them


class ClosingStore(AsyncMemoryStore):
    def __init__(self, events: list[str], fails: bool = False) -> None:
        super().__init__()
        self.events, self.fails = events, fails

    async def close(self) -> None:
        self.events.append("store closed")
        if self.fails:
            raise OSError("connection reset")


def run_lifespan(shutdown_outcome: str, fails: bool = False) -> list[str]:
    """One lifespan through the middleware; the app's shutdown handler ends in `shutdown_outcome`."""
    events: list[str] = []
    stores = {"n1": ClosingStore(events, fails), "n2": ClosingStore(events)}
    manager = AsyncSessionManager(memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2", stores=stores)
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            events.append(f"app got {message['type']}")
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                events.append("app shutdown handlers")
                await send({"type": shutdown_outcome, "message": "as the app said"})
                return

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        events.append(f"server got {message['type']}")

    asyncio.run(SessionMiddleware(app, manager=manager)({"type": "lifespan"}, receive, send))
    return events


@pytest.mark.parametrize("outcome", ["lifespan.shutdown.complete", "lifespan.shutdown.failed"])
def test_stores_close_after_the_apps_shutdown_and_before_the_server_hears(outcome: str) -> None:
    assert run_lifespan(outcome) == [
        "app got lifespan.startup",
        "server got lifespan.startup.complete",
        "app got lifespan.shutdown",
        "app shutdown handlers",
        "store closed",
        "store closed",
        f"server got {outcome}",
    ]


def test_a_store_failing_to_close_does_not_hold_up_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pymsm"):
        events = run_lifespan("lifespan.shutdown.complete", fails=True)
    assert events[-3:] == ["store closed", "store closed", "server got lifespan.shutdown.complete"]
    assert "closing the session stores at shutdown failed" in caplog.text
    assert "connection reset" in caplog.text
