"""Taking a cache node out of memcached_nodes (docs/ops.md, "Retiring a cache node").

Left in the list while stopped, the node is down: each of its sessions moves to its backup
copy when next used. Taken out of the list, its sessions are lost; the first such id says so
in the log, naming the node and what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from pymsm import SessionManager
from support.servers import ServerProcess

pytestmark = pytest.mark.integration
Nodes = Callable[..., list[ServerProcess]]


def _session_on(app: SessionManager, node: str) -> str:
    while True:
        session = app.load(None)
        session["user"] = "ada"
        assert app.save(session).status == "stored"
        if session.id.endswith(f"-{node}"):
            return session.id


def test_a_node_left_listed_while_stopped_hands_its_sessions_over(
    memcached_nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    n1, n2 = memcached_nodes(2)
    both = f"n1:{n1.address},n2:{n2.address}"
    first = SessionManager(memcached_nodes=both)
    sid = _session_on(first, "n2")
    first.close()
    n2.kill()

    listed = SessionManager(memcached_nodes=both)
    session = listed.load(sid)
    assert (session.load_status, session["user"]) == ("relocated", "ada")
    assert session.id.endswith("-n1")  # moved to the node that held its backup copy

    caplog.set_level(logging.WARNING, "pymsm")
    removed = SessionManager(memcached_nodes=f"n1:{n1.address}")
    for _ in range(3):
        assert removed.load(_session_on(listed, "n1")).load_status == "found"
        assert removed.load(sid).load_status == "missing"
    assert removed.stats["unconfigured_node"] == 3
    warnings = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert len(warnings) == 1, warnings  # the first such id, then every thousandth
    assert "node 'n2'" in warnings[0] and "Retiring a cache node" in warnings[0]
    listed.close()
    removed.close()
