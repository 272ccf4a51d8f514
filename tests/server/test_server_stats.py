"""Stats shapes (names and order) against memcached 1.6, and the ops tools that parse them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import memcache
import pytest
from pymemcache.client.base import Client
from server_wire import exchange

from pymsm.server import MemcachedServer, Settings
from support.servers import HOST, ServerProcess, memcached_argv

pytestmark = pytest.mark.integration
FILL = [
    b"set a 1 0 3\r\nabc\r\n",
    b"set b 0 0 1000\r\n" + b"x" * 1000 + b"\r\n",
    b"get a\r\n",
]


def names(answer: bytes) -> list[str]:
    return [line.split()[1] for line in answer.decode().splitlines() if line.startswith("STAT ")]


def stats_of(port: int, command: bytes) -> bytes:
    return exchange(port, command + b"\r\n", until=b"END\r\n")


@pytest.fixture(scope="module")
def pair() -> object:
    """Fresh real and embedded servers holding the same two items."""
    real = ServerProcess(memcached_argv(), name="real").start()
    with MemcachedServer(Settings(port=0, listen=HOST)).running() as embedded:
        for port in (real.port, embedded.port):
            exchange(port, b"".join(FILL) + b"mn\r\n")
        yield real.port, embedded.port
    real.stop()


@pytest.mark.parametrize("command", [b"stats", b"stats settings", b"stats items", b"stats slabs"])
def test_stats_field_names_and_order_match(command: bytes, pair: tuple[int, int]) -> None:
    real, embedded = (names(stats_of(port, command)) for port in pair)
    assert embedded == real


def test_item_sizes_and_classes_match(pair: tuple[int, int]) -> None:
    def requested(port: int) -> dict[str, str]:
        lines = stats_of(port, b"stats items").decode().splitlines()
        return dict(
            re.findall(r"STAT (items:\d+:(?:number|mem_requested)) (\d+)", "\n".join(lines))
        )

    real, embedded = (requested(port) for port in pair)
    assert (
        embedded
        == real
        == {
            "items:1:number": "1",
            "items:1:mem_requested": "67",
            "items:12:number": "1",
            "items:12:mem_requested": "1060",
        }
    )


def test_slab_pages_match(pair: tuple[int, int]) -> None:
    def pages(port: int) -> list[str]:
        text = stats_of(port, b"stats slabs").decode()
        return re.findall(
            r"STAT (\d+:(?:chunk_size|chunks_per_page|total_pages|used_chunks) \d+)", text
        )

    real, embedded = (pages(port) for port in pair)
    assert embedded == real


def test_python_memcached_parses_stats(embedded: MemcachedServer) -> None:
    client = memcache.Client([f"{HOST}:{embedded.port}"])
    client.set("alpha", "1")
    client.set("beta", "x" * 500)
    general = client.get_stats()[0][1]
    assert general["curr_items"] == "2" and general["version"] == "1.6.18"
    items = client.get_stats("items")[0][1]
    assert items["items:1:number"] == "1"
    dump = client.get_stats("cachedump 1 0")[0][1]
    assert dump == {"alpha": "[1 b; 0 s]"}
    client.disconnect_all()


def test_pymemcache_stats(embedded: MemcachedServer) -> None:
    client = Client((HOST, embedded.port))
    client.set("k", b"v")
    assert client.get("k") == b"v"
    stats = client.stats()
    assert stats[b"get_hits"] == 1 and stats[b"cmd_set"] == 1
    assert client.stats("settings")[b"item_size_max"] == 1024 * 1024
    client.close()


def memcached_tool() -> str:
    path = shutil.which("memcached-tool") or "/usr/share/memcached/scripts/memcached-tool"
    if not shutil.which(path):
        pytest.fail("memcached-tool is missing: `apt-get install memcached` ships it")
    return path


@pytest.mark.parametrize("mode", ["display", "stats", "settings", "dump"])
def test_memcached_tool_reads_the_server(mode: str, embedded: MemcachedServer) -> None:
    exchange(embedded.port, b"set tool-key 3 0 2\r\nhi\r\nmn\r\n")
    tool = memcached_tool()
    result = subprocess.run(
        ["perl", tool, f"{HOST}:{embedded.port}", mode],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = {
        "display": b"96B",
        "stats": b"curr_items",
        "settings": b"item_size_max",
        "dump": b"add tool-key 3",
    }[mode]
    assert expected in result.stdout, result.stdout[:500]
    assert b"uninitialized" not in result.stderr, result.stderr  # perl warns on missing fields


def test_cli_serves_and_stops_on_sigterm() -> None:
    server = ServerProcess(lambda port: [sys.executable, "-m", "pymsm", "memcached", "-p",
                                         str(port), "-m", "64", "-U", "0", "-t", "2"])  # fmt: skip
    server.start()
    assert exchange(server.port, b"version\r\n", until=b"\r\n") == b"VERSION 1.6.18\r\n"
    assert server.process is not None
    server.process.terminate()
    assert server.process.wait(10) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["memcached", "-m", "lots"], b"-m"),
        # it listened on 34463 (99999 mod 65536), as memcached refuses to
        (["memcached", "-p", "99999"], b"argument -p/--port: port must be 0..65535, got 99999"),
        (["memcached", "-U", "-1"], b"port must be 0..65535, got -1"),
        (["demo", "--port", "70000"], b"argument --port: port must be 0..65535"),
    ],
)
def test_cli_rejects_bad_flags(args: list[str], message: bytes) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pymsm", *args],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
