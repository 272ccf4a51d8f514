"""Passive and active health over real, killed and restarted app nodes."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

from conftest import Client
from pymsm.balancer import BalancerThread
from support.servers import ServerProcess


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def backend_state(lb: BalancerThread, name: str) -> dict[str, object]:
    return next(b for b in lb.state()["backends"] if b["name"] == name)


def test_killed_backend_is_retried_elsewhere_then_skipped(balancer, nodes) -> None:
    lb = balancer("round_robin")
    client = Client(lb.port)
    assert [client.backend() for _ in range(3)] == ["app1", "app2", "app3"]
    nodes[1].kill()
    seen = [client.backend() for _ in range(8)]  # every GET answered: retried on another node
    assert "app2" not in seen
    assert set(seen) == {"app1", "app3"}
    app2 = backend_state(lb, "app2")
    assert app2["up"] is False and app2["failures"] == 1  # tried once, then skipped
    assert "connection failed" in str(app2["reason"])


def test_post_is_retried_when_refused_before_anything_was_sent(balancer, nodes) -> None:
    lb = balancer("round_robin")
    client = Client(lb.port)
    client.backend()  # app1; the next request goes to app2 over a fresh connection
    nodes[1].kill()
    response, _ = client.request("POST", "/upload", body=b"x" * 10)
    assert response.status == 200


class InFlight:
    """A slow request sent in a thread; the constructor returns once `node` is working on it."""

    def __init__(self, lb: BalancerThread, node: ServerProcess, method: str, body: bytes | None):
        client = Client(lb.port)
        self.answer: tuple[http.client.HTTPResponse, bytes] | None = None
        args = (client, method, "/slow?s=1", body)
        self.thread = threading.Thread(target=self._send, args=args)
        self.thread.start()
        wait_until(lambda: Client(node.port).get_json("/inflight")["slow"] == 1)

    def _send(self, client: Client, method: str, path: str, body: bytes | None) -> None:
        self.answer = client.request(method, path, body)

    def result(self) -> tuple[http.client.HTTPResponse, bytes]:
        self.thread.join(5)
        assert self.answer is not None
        return self.answer


def test_backend_dying_mid_request_retries_a_get_but_not_a_post_with_body(balancer, nodes) -> None:
    lb = balancer("round_robin")
    get = InFlight(lb, nodes[0], "GET", None)  # app1
    nodes[0].kill()
    response, data = get.result()
    assert response.status == 200 and json.loads(data)["backend"] == "app2"

    post = InFlight(lb, nodes[2], "POST", b"x" * 100)  # app3 (app2 was just used)
    nodes[2].kill()
    response, data = post.result()
    assert response.status == 502 and b"backend app3 failed" in data


def test_active_check_marks_a_dead_backend_down_and_brings_it_back(balancer, nodes) -> None:
    lb = balancer("round_robin", health_path="/healthz", fail_timeout=60.0)
    wait_until(lambda: all(b["up"] for b in lb.state()["backends"]))
    nodes[0].kill()
    wait_until(lambda: backend_state(lb, "app1")["reason"] == "health check failed")
    client = Client(lb.port)
    assert "app1" not in {client.backend() for _ in range(4)}
    assert backend_state(lb, "app1")["failures"] == 0  # the check caught it, no request did

    nodes[0].start()
    wait_until(lambda: backend_state(lb, "app1")["up"] is True)
    assert "app1" in {client.backend() for _ in range(3)}


def test_active_check_recovers_a_passively_failed_backend_before_fail_timeout(
    balancer, nodes
) -> None:
    lb = balancer("round_robin", health_path="/healthz", health_interval=0.2, fail_timeout=60.0)
    nodes[2].kill()
    client = Client(lb.port)
    for _ in range(3):
        client.backend()
    assert backend_state(lb, "app3")["up"] is False
    nodes[2].start()
    wait_until(lambda: backend_state(lb, "app3")["up"] is True)  # well before 60 s
    assert "app3" in {client.backend() for _ in range(3)}


def test_mark_down_and_up_programmatically(balancer) -> None:
    lb = balancer("round_robin")
    lb.mark_down("app3")
    client = Client(lb.port)
    assert {client.backend() for _ in range(6)} == {"app1", "app2"}
    assert backend_state(lb, "app3")["reason"] == "marked down"
    lb.mark_up("app3")
    assert "app3" in {client.backend() for _ in range(3)}
