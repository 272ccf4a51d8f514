"""Each strategy over real HTTP traffic to real app nodes."""

from __future__ import annotations

import threading
from collections import Counter

from conftest import Client
from pymsm.balancer import session_route
from pymsm.balancer.strategies import ip_hash_key

SESSION = "2A19B1EB6D9649C9FED3E7277FDFD470"


def test_round_robin_alternates(balancer) -> None:
    lb = balancer("round_robin")
    client = Client(lb.port)
    seen = [client.backend() for _ in range(6)]
    assert seen == ["app1", "app2", "app3", "app1", "app2", "app3"]


def test_least_conn_prefers_the_idle_backends(balancer, nodes) -> None:
    lb = balancer("least_conn")
    busy = HeldRequest(lb.port, "lc")  # one request in flight, on some backend
    try:
        busy_name = busy.backend
        others = Counter(Client(lb.port).backend() for _ in range(6))
        assert busy_name not in others
        assert sorted(others) == sorted({"app1", "app2", "app3"} - {busy_name})
        assert lb.state()["backends"][int(busy_name[-1]) - 1]["active"] == 1
    finally:
        busy.release(nodes)
    assert busy.rest == f"{busy_name}\n"


def test_ip_hash_is_stable_for_one_client(balancer) -> None:
    lb = balancer("ip_hash")
    seen = {Client(lb.port).backend() for _ in range(8)}
    assert len(seen) == 1
    # nginx's hash over 127.0.0.1's first three octets, three equal-weight servers
    expected = 89
    for octet in (127, 0, 0):
        expected = (expected * 113 + octet) % 6271
    assert seen == {f"app{expected % 3 + 1}"}


def test_ip_hash_key_uses_three_octets_of_ipv4_and_all_of_ipv6() -> None:
    assert ip_hash_key("10.1.2.3") == ip_hash_key("10.1.2.99") == bytes([10, 1, 2])
    assert ip_hash_key("::ffff:10.1.2.3") == bytes([10, 1, 2])
    assert len(ip_hash_key("2001:db8::1")) == 16


def test_sticky_cookie_keeps_a_client_and_moves_it_when_its_backend_dies(balancer, nodes) -> None:
    lb = balancer("sticky_cookie")
    client = Client(lb.port)
    first = client.backend()
    assert client.cookies["MSMROUTE"] == first
    assert {client.backend() for _ in range(5)} == {first}
    Client(lb.port).backend()  # another client moves the round robin on
    assert {client.backend() for _ in range(3)} == {first}

    nodes[int(first[-1]) - 1].kill()
    moved = client.backend()
    assert moved != first
    assert client.cookies["MSMROUTE"] == moved
    assert {client.backend() for _ in range(5)} == {moved}


def test_route_follows_the_session_id_suffix_and_falls_over(balancer, nodes) -> None:
    lb = balancer("route")
    client = Client(lb.port)
    client.cookies["MSMSESSIONID"] = f"{SESSION}-n1.app2"
    assert {client.backend() for _ in range(5)} == {"app2"}
    client.cookies["MSMSESSIONID"] = f"{SESSION}-n2.app3"
    assert {client.backend() for _ in range(3)} == {"app3"}

    nodes[2].kill()  # app3: the session is taken over elsewhere
    others = {client.backend() for _ in range(4)}
    assert others <= {"app1", "app2"} and others


def test_route_without_or_with_unknown_route_is_round_robin(balancer) -> None:
    lb = balancer("route")
    client = Client(lb.port)
    client.cookies["MSMSESSIONID"] = f"{SESSION}-n1.nosuchnode"
    assert sorted(client.backend() for _ in range(3)) == ["app1", "app2", "app3"]
    del client.cookies["MSMSESSIONID"]
    assert sorted(client.backend() for _ in range(3)) == ["app1", "app2", "app3"]


def test_session_route_parses_msm_and_tomcat_ids_only() -> None:
    assert session_route(f"{SESSION}-n1.app1") == "app1"
    assert session_route(f"{SESSION}.tomcat-2") == "tomcat-2"
    assert session_route(f"{SESSION}-n1") is None
    assert session_route("../../etc.app1") is None
    assert session_route(None) is None


class HeldRequest:
    """GET /hold?id=KEY through the balancer in a thread; returns once the head and first chunk
    arrived, so the request is in flight on `backend` until `release()`."""

    def __init__(self, port: int, key: str) -> None:
        self.key = key
        self.client = Client(port)
        self.client.conn.request("GET", f"/hold?id={key}")
        self.response = self.client.conn.getresponse()
        self.backend = self.response.headers["X-Backend-Name"]
        assert self.response.readline() == b"first\n"
        self.rest = ""
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        self.rest = self.response.read().decode()

    def release(self, nodes) -> None:
        node = next(n for n in nodes if n.name == self.backend)
        Client(node.port).request("GET", f"/release?id={self.key}")
        self._reader.join(5)
        self.client.close()
