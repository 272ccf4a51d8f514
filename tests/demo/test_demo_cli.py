"""`msm demo` as a user runs it: a subprocess on a port, `msm demo ctl` from another
"terminal", a second demo on the same port refused with a clear message, SIGTERM stops every
child. Uses the embedded memcached server (the fallback when memcached is not installed)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from demo_helpers import Browser, wait_until, walk

from pymsm.demo.control import call, find, state_file
from pymsm.demo.processes import free_port, listening

pytestmark = pytest.mark.integration


def msm(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pymsm", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    argv = [sys.executable, "-m", "pymsm", "demo", "--port", str(port), "--embedded-memcached"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: state_file(port).exists() or proc.poll() is not None, 30, "demo up")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()  # only if a test failed before its own SIGTERM: a clean stop
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_demo_cli_prints_topology_and_ctl_kills_and_starts(running) -> None:
    _proc, port = running
    status = msm("demo", "ctl", "--port", str(port), "status")
    assert status.returncode == 0, status.stderr
    assert f"open  http://127.0.0.1:{port}/" in status.stdout
    assert "memcached n1" in status.stdout and "app app2" in status.stdout
    state = call(find(port))
    assert [n["program"] for n in state["memcached"]] == ["pymsm memcached"] * 2
    assert [n["program"] for n in state["apps"]] == ["gunicorn"] * 2
    assert "(pymsm memcached)" in status.stdout

    browser = Browser(f"http://127.0.0.1:{port}")
    home = walk(browser, 2, 0)[-1]["id_parts"]["node"]
    killed = msm("demo", "ctl", "--port", str(port), "kill", "memcached", home)
    assert killed.returncode == 0 and killed.stdout.startswith(f"killed memcached {home}")
    assert walk(browser, 3, 2)[-1]["id_parts"]["node"] != home
    unknown = msm("demo", "ctl", "--port", str(port), "kill", "app", "app7")
    assert (
        unknown.returncode == 1 and "no app node 'app7': the nodes are app1, app2" in unknown.stdout
    )
    started = msm("demo", "ctl", "--port", str(port), "start", "memcached", home)
    assert started.returncode == 0 and f"started memcached {home}" in started.stdout


def test_demo_cli_second_demo_on_a_busy_port_says_so(running) -> None:
    _proc, port = running
    second = msm("demo", "--port", str(port))
    assert second.returncode == 1
    assert f"port {port} is in use: a demo seems to run there already" in second.stderr
    assert f"msm demo --port {port + 1}" in second.stderr
    assert state_file(port).exists()  # the refused demo left the running one's file alone
    nobody = msm("demo", "ctl", "--port", str(free_port()), "status")
    assert nobody.returncode == 1 and "no demo runs with its balancer on port" in nobody.stderr


def test_demo_cli_sigterm_stops_every_child(running) -> None:
    proc, port = running
    state = call(find(port))
    addresses = [n["address"] for n in [*state["memcached"], *state["apps"]]]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    output = proc.stdout.read() if proc.stdout else ""
    assert "msm demo: stopped" in output
    assert not listening(port)
    for address in addresses:
        assert not listening(int(address.rsplit(":", 1)[1])), address
    assert not state_file(port).exists()
