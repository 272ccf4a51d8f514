"""`msm balancer` as a subprocess, and the usage errors of both balancer commands."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from conftest import Client, backend_args
from pymsm.balancer import BalancerConfig, HealthCheck, Limits, command, parse_backends
from pymsm.cli import build_parser, main
from pymsm.cli.balancer import config_from_args
from support.servers import ServerProcess, free_port, wait_for_port


def test_balancer_runs_as_a_subprocess_from_command(nodes) -> None:
    config = BalancerConfig(
        parse_backends(backend_args(nodes)), port=0, strategy="route", status_path="/_lb"
    )
    server = ServerProcess(lambda port: command(BalancerConfig(**{**vars(config), "port": port})))
    server.start()
    try:
        client = Client(server.port)
        assert sorted(client.backend() for _ in range(3)) == ["app1", "app2", "app3"]
        state = client.get_json("/_lb")
        assert state["strategy"] == "route"
        assert sum(b["requests"] for b in state["backends"]) == 3
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["balancer"], "--backend NAME=HOST:PORT"),
        (["balancer", "--backend", "app1=localhost"], "write host:port"),
        (["balancer", "--backend", "a b=127.0.0.1:1"], "bad backend name"),
        (["balancer", "--backend", "127.0.0.1:1", "--strategy", "random"], "--strategy"),
        (["balancer", "--backend", "127.0.0.1:1", "--listen", "8080"], "--listen address"),
        (["balancer", "--backend", "a=127.0.0.1:1", "--backend", "a=127.0.0.1:2"], "unique"),
        (["balancer", "--backend", "127.0.0.1:1", "--health-path", "healthz"], "start with '/'"),
        (["balancer", "--backend", "127.0.0.1:1", "--workers", "0"], "--workers must be >= 1"),
        (["nginx-config"], "--backend NAME=HOST:PORT"),
        (["nginx-config", "--backend", "127.0.0.1:1", "--strategy", "x"], "--strategy"),
        (["nginx-config", "--backend", "127.0.0.1:1", "--workers", "many"], "--workers"),
    ],
)
def test_usage_errors_name_the_flag_and_exit_2(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_msm_lists_both_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pymsm", "--help"], capture_output=True, text=True, check=True
    )
    assert "balancer" in result.stdout and "nginx-config" in result.stdout


def test_command_round_trips_the_config() -> None:
    config = BalancerConfig(
        parse_backends(["app1=127.0.0.1:1", "b-2=[::1]:2"]),
        port=9,
        strategy="sticky_cookie",
        access_log=False,
        health=HealthCheck(path="/healthz", interval=0.5),
        limits=Limits(max_body_size=10),
    )
    argv = command(config)
    assert argv[1:4] == ["-m", "pymsm", "balancer"]
    assert config_from_args(build_parser().parse_args(argv[3:])) == config


def test_command_passes_workers() -> None:
    config = BalancerConfig(parse_backends(["app1=127.0.0.1:1"]), port=9, workers=3)
    argv = command(config)
    assert argv[argv.index("--workers") + 1] == "3"
    assert config_from_args(build_parser().parse_args(argv[3:])) == config
    assert "--workers" not in command(BalancerConfig(config.backends, port=9))


def test_sigterm_with_keep_alive_clients_stops_cleanly(nodes) -> None:
    """Open keep-alive connections are cancelled on stop; Python 3.11's asyncio.streams logged
    that as a CancelledError traceback until the connection task stopped ending cancelled."""
    port = free_port()
    config = BalancerConfig(parse_backends(backend_args(nodes)), port=port)
    process = subprocess.Popen(command(config), stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        clients = [Client(port) for _ in range(3)]
        assert all(client.backend() for client in clients)  # each stays open (keep-alive)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "CancelledError" not in err, err
