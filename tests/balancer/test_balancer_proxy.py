"""Proxying over real connections: headers, keep-alive, streaming, limits and error answers."""

from __future__ import annotations

import asyncio
import hashlib
import json

from test_balancer_strategies import HeldRequest

from conftest import Client, raw_exchange
from pymsm.balancer import BalancerConfig, Limits, Timeouts, parse_backends
from pymsm.balancer.server import Balancer


def test_forwarded_headers_are_set_and_hop_by_hop_headers_dropped(balancer) -> None:
    lb = balancer()
    client = Client(lb.port)
    response, data = client.request(
        "GET",
        "/",
        headers={
            "X-Forwarded-For": "10.0.0.7",
            "X-Forwarded-Proto": "https",
            "Connection": "keep-alive, X-Private",
            "X-Private": "secret",
            "Keep-Alive": "timeout=5",
            "X-Kept": "yes",
        },
    )
    seen = json.loads(data)["headers"]
    assert seen["x-forwarded-for"] == "10.0.0.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{lb.port}"
    assert seen["host"] == f"127.0.0.1:{lb.port}"
    assert seen["x-kept"] == "yes"
    assert "x-private" not in seen and "keep-alive" not in seen and "connection" not in seen
    assert response.headers["X-Proxy"] == "pymsm-balancer"
    assert response.headers["X-Backend"] == json.loads(data)["backend"]


def test_keep_alive_reuses_client_and_backend_connections(balancer) -> None:
    lb = balancer()
    client = Client(lb.port)
    payloads = [client.get_json() for _ in range(60)]
    assert lb.state()["connections"] == 1  # still the one client connection
    for name in ("app1", "app2", "app3"):
        conns = {p["conn"] for p in payloads if p["backend"] == name}
        assert len(conns) == 1, (name, conns)  # one pooled connection per backend
    assert [b["requests"] for b in lb.state()["backends"]] == [20, 20, 20]


def test_chunked_request_body_is_streamed_to_the_backend(balancer) -> None:
    lb = balancer(limits=Limits(max_body_size=8 * 1024 * 1024))
    chunks = [bytes([i]) * 65536 for i in range(40)]  # 2.5 MiB
    response, data = Client(lb.port).request(
        "POST", "/upload", body=iter(chunks), encode_chunked=True
    )
    payload = json.loads(data)
    assert response.status == 200
    assert payload["headers"]["transfer-encoding"] == "chunked"
    assert payload["length"] == 40 * 65536
    assert payload["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_content_length_body_is_forwarded_with_its_length(balancer) -> None:
    lb = balancer()
    body = b"a" * 100_000
    _, data = Client(lb.port).request("POST", "/upload", body=body)
    payload = json.loads(data)
    assert payload["headers"]["content-length"] == "100000"
    assert payload["sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_response_is_streamed_not_buffered(balancer, nodes) -> None:
    lb = balancer()
    held = HeldRequest(lb.port, "stream")  # got the first chunk while the backend still waits
    assert held.response.headers["Transfer-Encoding"] == "chunked"
    held.release(nodes)
    assert held.rest == f"{held.backend}\n"
    response, data = Client(lb.port).request("GET", "/stream?n=200&size=10000")
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert data == b"x" * 2_000_000


def test_oversized_body_gets_413(balancer) -> None:
    lb = balancer(limits=Limits(max_body_size=1000))
    response, data = Client(lb.port).request("POST", "/upload", body=b"x" * 5000)
    assert response.status == 413 and b"over the limit" in data
    response, _ = Client(lb.port).request(
        "POST", "/upload", body=iter([b"x" * 600, b"y" * 600]), encode_chunked=True
    )
    assert response.status == 413
    response, _ = Client(lb.port).request("POST", "/upload", body=b"x" * 1000)
    assert response.status == 200


def test_backend_timeout_gets_504(balancer) -> None:
    lb = balancer(timeouts=Timeouts(read=0.3))
    response, data = Client(lb.port).request("GET", "/slow?s=3")
    assert response.status == 504
    assert b"did not answer in time" in data


def test_all_backends_down_gets_503_with_retry_after(balancer) -> None:
    lb = balancer()
    for name in ("app1", "app2", "app3"):
        lb.mark_down(name)
    response, data = Client(lb.port).request("GET", "/")
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert b"no backend is up" in data
    lb.mark_up("app2")
    assert Client(lb.port).backend() == "app2"


def test_malformed_request_gets_400_not_a_traceback(balancer) -> None:
    lb = balancer()
    answer = raw_exchange(lb.port, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"malformed request" in answer
    answer = raw_exchange(lb.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert lb.state()["requests"] == 0  # nothing reached a backend


def test_oversized_head_gets_431(balancer) -> None:
    lb = balancer(limits=Limits(max_header_size=4096))
    answer = raw_exchange(
        lb.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_connections_over_the_limit_get_503(balancer) -> None:
    lb = balancer(limits=Limits(max_connections=1))
    first = Client(lb.port)
    assert first.backend() == "app1"
    answer = raw_exchange(lb.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert lb.state()["rejected"] == 1


def test_status_path_serves_state_and_controls_backends(balancer) -> None:
    lb = balancer(status_path="/_lb")
    client = Client(lb.port)
    state = client.get_json("/_lb")
    assert [b["name"] for b in state["backends"]] == ["app1", "app2", "app3"]
    response, data = client.request("POST", "/_lb/app1/down")
    assert response.status == 200 and json.loads(data)["backends"][0]["up"] is False
    assert "app1" not in {client.backend() for _ in range(4)}
    response, _ = client.request("POST", "/_lb/nosuch/down")
    assert response.status == 404


def test_client_connection_close_gets_the_response_then_the_close(balancer) -> None:
    # h11 puts such a client in MUST_CLOSE, not DONE, after its request (urllib does this)
    lb = balancer()
    answer = raw_exchange(lb.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
    assert answer.startswith(b"HTTP/1.1 200 ")
    body = b"x" * 10
    request = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n"
    assert raw_exchange(lb.port, request + body, 3).startswith(b"HTTP/1.1 200 ")
    http10 = raw_exchange(lb.port, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 3)
    assert http10.startswith(b"HTTP/1.1 200 ")


def test_stop_cancels_again_a_connection_that_swallowed_its_cancel() -> None:
    """A task that survives one cancel must not keep a worker, and so its supervisor, from
    exiting: stop() cancels what is left again."""

    async def scenario() -> None:
        balancer = Balancer(BalancerConfig(parse_backends(["app1=127.0.0.1:1"])))
        cancels = 0

        async def stubborn_connection() -> None:
            nonlocal cancels
            while True:
                try:
                    await asyncio.sleep(3600)  # an idle keep-alive connection
                except asyncio.CancelledError:
                    cancels += 1
                    if cancels >= 2:
                        raise

        task = asyncio.create_task(stubborn_connection())
        balancer._tasks.add(task)
        await asyncio.sleep(0)
        await asyncio.wait_for(balancer.stop(), timeout=5)
        assert task.cancelled() and cancels == 2

    asyncio.run(scenario())
