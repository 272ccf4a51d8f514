"""Workers forked from a master that already used pymsm (gunicorn --preload; pymsm/forks.py).

Before the tenth session a forked worker kept using the master's memcached connection, shared
with every other worker: replies went to the wrong process (a worker read another's value) and
commands failed. The async backup writer's thread, started in the master, did not exist in the
workers, so their backup writes were queued and never made.
"""

from __future__ import annotations

import http.client
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pymsm import SessionManager
from pymsm.core.nodes import Node
from pymsm.stores.memcached import MemcachedStore
from support.servers import HOST, ServerProcess, gunicorn_app

pytestmark = pytest.mark.integration
Nodes = Callable[..., list[ServerProcess]]


def _in_children(count: int, work: Callable[[int], str]) -> list[str]:
    """Run `work(i)` in `count` forked children at once; what each returned (its verdict)."""
    children = []
    with warnings.catch_warnings():  # Python 3.12 warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        for i in range(count):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report, and never return into pytest
                os.close(read)
                try:
                    verdict = work(i)
                except BaseException as exc:  # reported to the parent
                    verdict = f"raised {exc!r}"
                os.write(write, verdict.encode())
                os._exit(0)
            os.close(write)
            children.append((pid, read))
    verdicts = []
    for pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            verdicts.append(pipe.read().decode())
        os.waitpid(pid, 0)
    return verdicts


def test_forked_workers_do_not_share_the_masters_connection(memcached_nodes: Nodes) -> None:
    server = memcached_nodes(1)[0]
    store = MemcachedStore(Node("n1", HOST, server.port), operation_timeout=2.0)
    store.set("warm-up", b"x", 60)  # the master used the store before forking

    def work(worker: int) -> str:
        wrong = []
        for i in range(2000):
            key, value = f"worker{worker}", f"{worker}-{i}".encode()
            store.set(key, value, 60)
            got = store.get_many([key]).get(key)
            if got != value:
                wrong.append((value, got))
        return f"wrong {wrong[:3]}" if wrong else "ok"

    assert _in_children(3, work) == ["ok", "ok", "ok"]
    assert store.get_many(["warm-up"]) == {"warm-up": b"x"}  # the master's connection still works
    store.close()


def test_a_forked_worker_makes_its_async_backup_writes(memcached_nodes: Nodes) -> None:
    nodes = memcached_nodes(2)
    settings = {
        "memcached_nodes": ",".join(f"{n.name}:{n.address}" for n in nodes),
        "sticky": True,
        "route": "app1",
        "session_backup_async": True,
    }
    app = SessionManager(**settings)  # the writer's thread starts here, in the master

    def work(worker: int) -> str:
        session = app.load(None)
        session["worker"] = worker
        app.save(session)
        app.close()  # drains this process's queue (as at a worker's exit)
        return session.id

    sids = _in_children(2, work)
    app.close()
    reader = SessionManager(memcached_nodes=settings["memcached_nodes"])
    for worker, sid in enumerate(sids):
        session = reader.load(sid)
        assert (session.load_status, session.get("worker")) == ("found", worker), sid
    reader.close()


def test_gunicorn_preload_workers_write_their_async_backups(memcached_nodes: Nodes) -> None:
    """gunicorn --preload, three workers, sticky mode with async backup: the master built the
    manager (and its writer thread) and used the stores. Every session a worker created is in
    the store once gunicorn has stopped; before, a worker's writer thread did not exist and
    none was."""
    nodes = ",".join(f"{n.name}:{n.address}" for n in memcached_nodes(2))
    env = {
        "MSM_MEMCACHED_NODES": nodes,
        "MSM_STICKY": "true",
        "MSM_ROUTE": "app1",
        "MSM_SESSION_BACKUP_ASYNC": "true",
    }
    here = str(Path(__file__).resolve().parent)
    server = gunicorn_app("preload_app:app", here, env, workers=3, extra=["--preload"])
    server.start()
    try:

        def client(_: int) -> tuple[str, str]:
            conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read().decode()
            conn.close()
            assert response.status == 200, body
            return response.getheader("Set-Cookie", "").split(";")[0].split("=", 1)[1], body

        with ThreadPoolExecutor(6) as pool:
            sessions = list(pool.map(client, range(24)))
    finally:
        server.stop()  # graceful: each worker drains its queue at exit
    assert len({body.split()[1] for _, body in sessions}) > 1  # served by several workers
    reader = SessionManager(memcached_nodes=nodes)
    found = [reader.load(sid) for sid, _ in sessions]
    assert [(s.load_status, s.get("n")) for s in found] == [("found", 1)] * len(sessions)
    reader.close()
