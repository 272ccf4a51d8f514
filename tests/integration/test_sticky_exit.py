"""A process with `session_backup_async=True` that exits without calling `close()` (a gunicorn
worker's graceful exit: a deploy, `max_requests`; an ASGI server running without lifespan)
still makes the writes and deletes waiting in its background queue: both writers drain at the
interpreter's exit (pymsm.backup). A real process against real memcached and the embedded
server; the writes are slowed down so the queue is still full when the process ends."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from pymemcache.client.base import Client

from support.servers import HOST, ServerProcess

pytestmark = pytest.mark.integration
Nodes = Callable[[int], list[ServerProcess]]

SYNC = """
import json, sys, time
from pymsm import SessionManager

m = SessionManager(memcached_nodes=sys.argv[1], sticky=True, route="a", session_backup_async=True)
gone = m.load(None)
gone["user"] = "ann"
m.save(gone)
m._sticky.flush()  # stored before the node slows down
writer = m._sticky.writer
run = writer._execute
writer._execute = lambda op: (time.sleep(0.002), run(op))[1]  # a node that answers slowly
kept = []
for i in range(50):
    session = m.load(None)
    session["i"] = i
    m.save(session)
    kept.append(session.id)
gone_id = gone.id
gone = m.load(gone_id)
gone.invalidate()  # a logout, queued behind the writes
m.save(gone)
print(json.dumps({"kept": kept, "gone": gone_id, "queued": writer._queue.qsize()}))
# no close(): the interpreter exits, as a gunicorn worker does after its last request
"""


ASYNC = """
import asyncio, json, sys
from pymsm import AsyncSessionManager

m = AsyncSessionManager(
    memcached_nodes=sys.argv[1], sticky=True, route="a", session_backup_async=True
)

async def main():
    gone = await m.load(None)
    gone["user"] = "ann"
    await m.save(gone)
    await m._sticky.flush()  # stored before the node slows down
    writer = m._sticky.writer
    run = writer._execute

    async def slowly(op):  # a node that answers slowly
        await asyncio.sleep(0.002)
        return await run(op)

    writer._execute = slowly
    kept = []
    for i in range(50):
        session = await m.load(None)
        session["i"] = i
        await m.save(session)
        kept.append(session.id)
    gone_id = gone.id
    gone = await m.load(gone_id)
    gone.invalidate()  # a logout, queued behind the writes
    await m.save(gone)
    return {"kept": kept, "gone": gone_id, "queued": writer._queue.qsize()}

print(json.dumps(asyncio.run(main())))
# no close(): the loop is gone and the interpreter exits, as without lifespan shutdown
"""


@pytest.mark.parametrize("script", [SYNC, ASYNC], ids=["SessionManager", "AsyncSessionManager"])
def test_queued_writes_and_logouts_are_made_when_the_process_exits(
    memcached_nodes: Nodes, script: str
) -> None:
    (node,) = memcached_nodes(1)
    done = subprocess.run(
        [sys.executable, "-c", script, f"n1:{node.address}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(done.stdout)
    assert out["queued"] > 0, "the queue was drained before the exit: the test proves nothing"
    client = Client((HOST, node.port), timeout=2)
    try:
        stored = [client.get(sid) for sid in out["kept"]]
        assert all(value is not None for value in stored), f"{stored.count(None)} lost"
        assert client.get("tomb:" + out["gone"]) is not None and client.get(out["gone"]) is None
    finally:
        client.close()
