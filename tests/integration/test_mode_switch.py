"""Switching between non-sticky and sticky mode, all processes at once (docs/sticky.md,
"Switching between the modes"): the sessions made in one mode are served, with their data, by
the processes of the other, which keep them from there."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pymsm import SessionManager
from support.servers import ServerProcess

pytestmark = pytest.mark.integration
Nodes = Callable[..., list[ServerProcess]]


@pytest.mark.parametrize("before_sticky", [False, True], ids=["to-sticky", "to-non-sticky"])
def test_sessions_survive_a_switch_of_mode(memcached_nodes: Nodes, before_sticky: bool) -> None:
    nodes = ",".join(f"{n.name}:{n.address}" for n in memcached_nodes(2))

    def app(sticky: bool) -> SessionManager:
        return SessionManager(memcached_nodes=nodes, sticky=sticky, route="app1")

    before = app(before_sticky)
    sids = []
    for i in range(10):
        session = before.load(None)
        session["i"] = i
        assert before.save(session).status == "stored"
        sids.append(session.id)
    before.close()

    after, other = app(not before_sticky), app(not before_sticky)  # two processes, one route
    for i, sid in enumerate(sids):
        session = after.load(sid)
        assert (session.id, session["i"]) == (sid, i)
        session["i"] = i + 100
        assert after.save(session).status == "stored"
        again = other.load(sid)
        assert (again.id, again["i"]) == (sid, i + 100)
    after.close()
    other.close()
