"""`msm nginx-config`: the generated config passes `nginx -t` and real nginx serves with it."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Client, backend_args
from pymsm.cli import main
from support.servers import ServerProcess, require_binary

STRATEGIES = ["round_robin", "least_conn", "ip_hash", "sticky_cookie", "route"]
SESSION = "2A19B1EB6D9649C9FED3E7277FDFD470"


def generate(nodes: list[ServerProcess], strategy: str, port: int, path: Path, *extra: str) -> None:
    argv = ["nginx-config", "--strategy", strategy, "--listen", f"127.0.0.1:{port}"]
    for backend in backend_args(nodes):
        argv += ["--backend", backend]
    assert main([*argv, "--workers", "1", "-o", str(path), *extra]) == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_generated_config_passes_nginx_t(strategy, nodes, tmp_path) -> None:
    nginx = require_binary("nginx", "nginx")
    conf = tmp_path / "nginx.conf"
    generate(nodes, strategy, 8080, conf)
    result = subprocess.run(
        [nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_snippet_is_only_upstream_and_server(nodes, tmp_path, capsys) -> None:
    argv = ["nginx-config", "--snippet", "--strategy", "ip_hash"]
    for backend in backend_args(nodes):
        argv += ["--backend", backend]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("upstream msm_backends {\n    ip_hash;")
    assert "http {" not in text and "events" not in text
    assert "proxy_next_upstream error timeout;" in text


@pytest.fixture
def nginx(nodes, tmp_path) -> Iterator[Callable[[str], ServerProcess]]:
    """Factory: `nginx(strategy)` runs real nginx with the generated config on a free port."""
    binary = require_binary("nginx", "nginx")
    started: list[ServerProcess] = []

    def start(strategy: str) -> ServerProcess:
        def argv(port: int) -> list[str]:
            conf = tmp_path / f"{strategy}.conf"
            generate(nodes, strategy, port, conf, "--no-access-log")
            return [binary, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)]

        server = ServerProcess(argv, name=f"nginx-{strategy}").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_nginx_round_robin_spreads_over_all_backends(nginx) -> None:
    server = nginx("round_robin")
    client = Client(server.port)
    seen = Counter(client.backend() for _ in range(9))
    assert seen == {"app1": 3, "app2": 3, "app3": 3}
    response, data = client.request("GET", "/", headers={"X-Forwarded-For": "10.0.0.7"})
    assert response.headers["X-Proxy"] == "nginx"
    assert b'"x-forwarded-for": "10.0.0.7, 127.0.0.1"' in data


def test_nginx_route_follows_the_session_id_and_falls_over(nginx, nodes) -> None:
    server = nginx("route")
    client = Client(server.port)
    client.cookies["MSMSESSIONID"] = f"{SESSION}-n1.app2"
    assert {client.backend() for _ in range(5)} == {"app2"}
    client.cookies["MSMSESSIONID"] = f"{SESSION}-n1.unknown"
    assert len({client.backend() for _ in range(6)}) == 3
    client.cookies["MSMSESSIONID"] = f"{SESSION}-n1.app2"
    nodes[1].kill()
    others = {client.backend() for _ in range(4)}
    assert others and others <= {"app1", "app3"}


def test_nginx_ip_hash_picks_the_same_backend_as_the_balancer(nginx, balancer) -> None:
    through_nginx = {Client(nginx("ip_hash").port).backend() for _ in range(4)}
    through_balancer = {Client(balancer("ip_hash").port).backend() for _ in range(4)}
    assert len(through_nginx) == 1
    assert through_nginx == through_balancer
