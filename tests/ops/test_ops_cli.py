"""The msm operations commands against real memcached nodes holding sessions written by pymsm."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from pymsm import SessionManager
from pymsm.cli import main
from support.servers import ServerProcess

pytestmark = pytest.mark.integration

Start = Callable[[int], list[ServerProcess]]


def nodes_setting(servers: list[ServerProcess]) -> str:
    return ",".join(f"{s.name}:{s.address}" for s in servers)


def write_sessions(nodes: str, count: int) -> list[str]:
    # every request writes the access time, so each session has all four keys: record,
    # validity, and their backup copies (a changed request alone writes only the records)
    manager = SessionManager(memcached_nodes=nodes, access_time_resolution=0)
    ids = []
    for i in range(count):
        session = manager.load(None)
        session["user"] = f"user{i}"
        session["cart"] = [i, i + 1]
        assert manager.save(session).status == "stored"
        assert manager.save(manager.load(session.id)).status == "unchanged"
        ids.append(session.id)
    manager.close()
    return ids


def raw(server: ServerProcess, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(command)
        return sock.recv(65536)


@pytest.fixture
def two_nodes(memcached_nodes: Start) -> Iterator[list[ServerProcess]]:
    """Two nodes, killed afterwards: nothing on them needs saving, and memcached takes about a
    second to stop on SIGTERM, which the fixture's stop() would wait for."""
    servers = memcached_nodes(2)
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture
def cluster(two_nodes: list[ServerProcess]) -> tuple[list[ServerProcess], str, list[str]]:
    nodes = nodes_setting(two_nodes)
    return two_nodes, nodes, write_sessions(nodes, 4)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- stats -------------------------------------------------------------------------------------


def test_stats_table_and_json(cluster, capsys) -> None:
    _, nodes, _ = cluster
    code, out, _ = run(capsys, "stats", "--nodes", nodes)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NODE", "ADDRESS", "STATE", "VERSION"]
    assert [line.split()[0] for line in lines[1:3]] == ["n1", "n2"]
    assert all(" up " in line for line in lines[1:3])
    code, out, _ = run(capsys, "stats", "--json", "--nodes", nodes)
    doc = json.loads(out)
    total_items = sum(n["counters"]["curr_items"] for n in doc["nodes"])
    assert total_items == 16  # 4 sessions x (record, validity, backup, backup validity)
    assert all(n["up"] and n["item_size_max"] == 1024 * 1024 for n in doc["nodes"])


def test_stats_watch_gives_rates_and_stops_after_count(cluster, capsys) -> None:
    _, nodes, _ = cluster
    code, out, _ = run(
        capsys, "stats", "--nodes", nodes, "--watch", "0.05", "--count", "3", "--json"
    )
    samples = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(samples) == 3
    assert samples[0]["nodes"][0]["rates"] == {}
    assert set(samples[2]["nodes"][0]["rates"]) >= {"cmd_get", "cmd_set"}
    code, out, _ = run(capsys, "stats", "--nodes", nodes, "--watch", "0.05", "--count", "2")
    assert out.count("NODE") == 2 and "GET/S" in out


def test_stats_reports_a_node_down(cluster, capsys) -> None:
    servers, nodes, _ = cluster
    servers[1].kill()
    code, out, _ = run(capsys, "stats", "--nodes", nodes, "--timeout", "0.5")
    assert code == 1
    assert "n2 is down" in out and "Traceback" not in out
    code, out, _ = run(capsys, "stats", "--json", "--nodes", nodes, "--timeout", "0.5")
    down = json.loads(out)["nodes"][1]
    assert code == 1 and down["up"] is False and "n2" in down["error"]


# -- sessions ----------------------------------------------------------------------------------


def test_sessions_list_tells_copies_apart(cluster, capsys) -> None:
    _, nodes, ids = cluster
    code, out, _ = run(capsys, "sessions", "list", "--nodes", nodes)
    assert code == 0
    assert out.splitlines()[-1] == "16 keys: 4 primary, 4 validity, 4 backup, 4 backup_validity"
    code, out, _ = run(capsys, "sessions", "list", "--json", "--nodes", nodes)
    keys = json.loads(out)
    for sid in ids:
        mine = {k["kind"]: k for k in keys if k["session_id"] == sid}
        assert set(mine) == {"primary", "validity", "backup", "backup_validity"}
        home = sid.rsplit("-", 1)[1]
        assert mine["primary"]["node"] == home and mine["backup"]["node"] != home
        assert 0 < mine["primary"]["ttl"] <= 1800 * 1.5 + 60
        assert mine["primary"]["size"] > 0


def test_sessions_list_filters(cluster, capsys) -> None:
    _, nodes, ids = cluster
    code, out, _ = run(capsys, "sessions", "list", "--json", "--nodes", nodes, "--node", "n1")
    assert code == 0 and {k["node"] for k in json.loads(out)} == {"n1"}
    code, out, _ = run(
        capsys, "sessions", "list", "--json", "--nodes", nodes, "--prefix", ids[0][:10]
    )
    assert {k["session_id"] for k in json.loads(out)} == {ids[0]}
    code, out, _ = run(
        capsys, "sessions", "list", "--json", "--nodes", nodes, "--kind", "backup", "--limit", "3"
    )
    listed = json.loads(out)
    assert len(listed) == 3 and {k["kind"] for k in listed} == {"backup"}


def test_sessions_count(cluster, capsys) -> None:
    _, nodes, _ = cluster
    code, out, _ = run(capsys, "sessions", "count", "--nodes", nodes)
    assert code == 0 and out.splitlines()[-1] == "4 sessions, 4 backups"
    code, out, _ = run(capsys, "sessions", "count", "--json", "--nodes", nodes)
    doc = json.loads(out)
    assert doc["sessions"] == 4 and doc["backups"] == 4
    assert sum(n["primary"] for n in doc["nodes"].values()) == 4


def test_sessions_show_redacts_unless_revealed(cluster, capsys) -> None:
    _, nodes, ids = cluster
    code, out, _ = run(capsys, "sessions", "show", ids[0], "--nodes", nodes)
    assert code == 0
    assert "agree      yes" in out and "user: <str, 5>" in out and "user0" not in out
    code, out, _ = run(capsys, "sessions", "show", ids[0], "--nodes", nodes, "--json", "--reveal")
    doc = json.loads(out)
    home = ids[0].rsplit("-", 1)[1]
    roles = {c["role"]: c for c in doc["copies"]}
    assert doc["agree"] is True and doc["problems"] == []
    assert (
        roles["primary"]["node"] == home and roles["backup"]["node"] == doc["expected_backup_node"]
    )
    assert roles["primary"]["attributes"] == {"user": "user0", "cart": [0, 1]}
    assert roles["primary"]["validity"]["max_inactive_s"] == 1800


def test_sessions_show_reports_a_missing_backup(cluster, capsys) -> None:
    servers, nodes, ids = cluster
    home = ids[0].rsplit("-", 1)[1]
    backup = servers[1] if home == "n1" else servers[0]
    assert raw(backup, f"delete bak:{ids[0]}\r\n".encode()) == b"DELETED\r\n"
    code, out, _ = run(capsys, "sessions", "show", ids[0], "--nodes", nodes)
    assert code == 1
    assert "backup     MISSING" in out and "problem: no backup copy" in out


def test_sessions_show_unknown_and_malformed_ids(cluster, capsys) -> None:
    _, nodes, _ = cluster
    code, out, _ = run(capsys, "sessions", "show", "0" * 32 + "-n1", "--nodes", nodes)
    assert code == 1 and "is on no node" in out
    code, _, err = run(capsys, "sessions", "show", "x y", "--nodes", nodes)
    assert code == 2 and "malformed session id" in err


def test_sessions_delete_removes_every_key_everywhere(cluster, capsys) -> None:
    _, nodes, ids = cluster
    code, out, _ = run(capsys, "sessions", "delete", ids[0], "--nodes", nodes)
    assert code == 0
    assert sum(int(line.split()[2]) for line in out.splitlines()) == 4
    code, out, _ = run(capsys, "sessions", "list", "--json", "--nodes", nodes)
    left = {k["kind"] for k in json.loads(out) if k["session_id"] == ids[0]}
    assert left == {"tomb", "validity"}  # what a logout leaves: the tombstones, until they expire
    manager = SessionManager(memcached_nodes=nodes)
    assert manager.load(ids[0]).is_new  # the app sees it gone too
    manager.close()
    code, _, err = run(capsys, "sessions", "delete", ids[0], "--nodes", nodes)
    assert code == 1 and "no key of session" in err


@pytest.mark.parametrize("sticky", [True, False], ids=["sticky", "non-sticky"])
def test_a_deleted_session_stays_deleted_for_the_processes_holding_it(
    two_nodes: list[ServerProcess], capsys, sticky: bool
) -> None:
    """An operator deletes a session (a stolen login): the app processes that hold it must not
    serve it again. A sticky process holds it in memory; before the tenth session msm deleted
    the keys with no tombstone, the process read a missing validity as 'the store lost it',
    served its copy and wrote it back."""
    nodes = nodes_setting(two_nodes)
    app = SessionManager(memcached_nodes=nodes, sticky=sticky, route="app1")
    session = app.load(None)
    session["user"] = "ada"
    assert app.save(session).status == "stored"
    sid = session.id
    assert app.load(sid)["user"] == "ada"  # held (sticky: in memory)

    code, out, _ = run(capsys, "sessions", "delete", sid, "--nodes", nodes)
    assert code == 0, out
    again = app.load(sid)
    assert again.load_status in ("invalidated", "missing") and "user" not in again
    app.save(again)
    reader = SessionManager(memcached_nodes=nodes)
    assert reader.load(sid).is_new  # not written back
    reader.close()
    app.close()


def test_sessions_with_a_node_down(cluster, capsys) -> None:
    servers, nodes, _ = cluster
    servers[0].kill()
    code, out, err = run(capsys, "sessions", "list", "--nodes", nodes, "--timeout", "0.5")
    assert code == 1
    assert "n1 (127.0.0.1" in err
    assert out.splitlines()[-1].startswith("8 keys: ")  # n2's half of the 16 keys


def test_empty_cluster(two_nodes: list[ServerProcess], capsys) -> None:
    nodes = nodes_setting(two_nodes)
    code, out, _ = run(capsys, "sessions", "list", "--nodes", nodes)
    assert code == 0 and out.splitlines()[-1] == "0 keys"
    code, out, _ = run(capsys, "sessions", "list", "--json", "--nodes", nodes)
    assert json.loads(out) == []
    code, out, _ = run(capsys, "sessions", "count", "--json", "--nodes", nodes)
    assert json.loads(out)["sessions"] == 0 and set(json.loads(out)["nodes"]) == {"n1", "n2"}
    code, out, _ = run(capsys, "doctor", "--nodes", nodes)
    assert code == 0 and "0 problem(s)" in out


# -- doctor ------------------------------------------------------------------------------------


def test_doctor_healthy_cluster(cluster, capsys) -> None:
    _, nodes, _ = cluster
    code, out, _ = run(capsys, "doctor", "--nodes", nodes)
    assert code == 0, out
    assert "meta yes, touch yes" in out and "every session has a backup" in out
    code, out, _ = run(capsys, "doctor", "--json", "--nodes", nodes)
    checks = {f["check"] for f in json.loads(out)["findings"]}
    assert {"config", "clock", "n1", "n2", "n1 memory", "n1 item size"} <= checks


def test_doctor_finds_missing_backups_and_dead_nodes(cluster, capsys) -> None:
    servers, nodes, ids = cluster
    for sid in ids:
        for server in servers:
            raw(server, f"delete bak:{sid}\r\n".encode())
    code, out, _ = run(capsys, "doctor", "--nodes", nodes)
    assert code == 1 and "sessions without a backup" in out
    servers[1].kill()
    code, out, _ = run(capsys, "doctor", "--nodes", nodes, "--timeout", "0.5")
    assert code == 1 and "unreachable" in out


def test_doctor_compares_item_size_limit_with_the_nodes(memcached_nodes: Start, capsys) -> None:
    """A node started with a smaller -I than item_size_limit refuses sessions pymsm would send
    (their backup copies unseen): a problem. A larger one is only a note."""
    small = memcached_nodes(1, ("-I", "512k"))
    code, out, _ = run(capsys, "doctor", "--nodes", nodes_setting(small))
    assert code == 1 and "set item_size_limit=524288 or raise -I" in out, out
    small[0].kill()
    large = memcached_nodes(1, ("-I", "2m"))
    code, out, _ = run(capsys, "doctor", "--nodes", nodes_setting(large))
    assert code == 0 and "pymsm stores at most item_size_limit=1048576" in out, out
    large[0].kill()


def test_doctor_names_each_bad_setting(capsys, monkeypatch) -> None:
    monkeypatch.setenv("MSM_LOCKING_MODE", "sometimes")
    monkeypatch.setenv("MSM_OPERATION_TIMEOUT", "soon")
    code, out, _ = run(capsys, "doctor", "--nodes", "n1:127.0.0.1:11211")
    assert code == 1
    assert "locking_mode: unknown mode 'sometimes'" in out
    assert "operation_timeout: cannot read 'soon'" in out


# -- configuration and exit codes --------------------------------------------------------------


def test_malformed_node_list_is_a_usage_error(capsys) -> None:
    code, out, err = run(capsys, "stats", "--nodes", "n1:nohost")
    assert code == 2 and "memcached_nodes" in err and "Traceback" not in err + out


def test_nodes_come_from_the_environment_or_a_file(cluster, capsys, monkeypatch, tmp_path) -> None:
    _, nodes, _ = cluster
    monkeypatch.setenv("MSM_MEMCACHED_NODES", nodes)
    code, out, _ = run(capsys, "sessions", "count")
    assert code == 0 and "4 sessions" in out
    monkeypatch.delenv("MSM_MEMCACHED_NODES")
    path = tmp_path / "pymsm.toml"
    path.write_text(f"[pymsm]\nmemcached_nodes = '{nodes}'\noperation_timeout = 250\n")
    code, out, _ = run(capsys, "config", "show", "--config", str(path))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["memcached_nodes"][-1] == "file" and rows["operation_timeout"][1:] == [
        "0.25s",
        "file",
    ]
    assert rows["sticky"][-1] == "default"
    monkeypatch.setenv("MSM_STICKY", "true")
    code, out, _ = run(capsys, "config", "show", "--json", "--config", str(path), "--nodes", nodes)
    doc = json.loads(out)
    assert doc["sticky"] == {"value": True, "source": "env"}
    assert doc["memcached_nodes"]["source"] == "flag"


def test_missing_nodes_names_the_setting(capsys, monkeypatch) -> None:
    monkeypatch.delenv("MSM_MEMCACHED_NODES", raising=False)
    code, _, err = run(capsys, "sessions", "count")
    assert code == 2 and "memcached_nodes is not set" in err and "--nodes" in err


def test_config_check(capsys, tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[pymsm]\nmemcached_nodes = 'n1:10.0.0.1:11211,n2:10.0.0.2:11211'\n")
    code, out, _ = run(capsys, "config", "check", str(good))
    assert code == 0 and out.startswith("ok")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pymsm]\nmemcached_nodes = 'n1:10.0.0.1'\nsticky = 'maybe'\n")
    code, out, _ = run(capsys, "config", "check", str(bad))
    assert code == 1 and "memcached_nodes" in out and "sticky: expected true or false" in out
    code, out, _ = run(capsys, "config", "check", str(tmp_path / "absent.toml"))
    assert code == 1 and "cannot read config file" in out


def test_config_import_writes_toml(capsys, tmp_path) -> None:
    source = tmp_path / "context.xml"
    source.write_text(
        '<Context><Manager className="de.javakaffee.web.msm.MemcachedBackupSessionManager" '
        'memcachedNodes="n1:127.0.0.1:11211 n2:127.0.0.1:11212" sticky="false" '
        'operationTimeout="500" enableStatistics="true"/></Context>'
    )
    target = tmp_path / "pymsm.toml"
    code, _, err = run(capsys, "config", "import", str(source), "-o", str(target))
    assert code == 0 and "enableStatistics" in err
    code, out, _ = run(capsys, "config", "check", str(target))
    assert code == 0 and "2 node(s)" in out
    code, _, err = run(capsys, "config", "import", str(tmp_path / "missing.xml"))
    assert code == 2 and "cannot read" in err


def test_exit_codes_in_a_real_process(cluster) -> None:
    servers, nodes, _ = cluster
    env = {**os.environ, "PYTHONWARNINGS": "error"}

    def msm(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pymsm", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    ok = msm("stats", "--nodes", nodes)
    assert ok.returncode == 0 and "n2" in ok.stdout
    usage = msm("sessions", "count", "--nodes", "n1:127.0.0.1:notaport")
    assert usage.returncode == 2 and "memcached_nodes" in usage.stderr
    assert "Traceback" not in usage.stderr
    bad_flag = msm("stats", "--no-such-flag")
    assert bad_flag.returncode == 2
    servers[1].kill()
    down = msm("sessions", "count", "--nodes", nodes, "--timeout", "0.5")
    assert down.returncode == 1 and "n2" in down.stderr and "Traceback" not in down.stderr


@pytest.mark.parametrize("memcached_kind", ["memcached"])  # memcached -o options, its LRU
def test_old_servers_are_listed_with_cachedump(memcached_nodes, capsys) -> None:
    # with its LRU crawler off, memcached refuses metadump as servers before 1.4.31 do; without
    # the LRU maintainer its LRU is not segmented either, as on those servers
    servers = memcached_nodes(2, ("-o", "no_lru_crawler,no_lru_maintainer"))
    nodes = nodes_setting(servers)
    ids = write_sessions(nodes, 3)
    code, out, err = run(capsys, "sessions", "list", "--json", "--progress", "--nodes", nodes)
    assert code == 0 and "(cachedump)" in err
    listed = json.loads(out)
    assert {k["session_id"] for k in listed if k["kind"] == "primary"} == set(ids)
    assert len(listed) == 12
    for server in servers:
        server.kill()


@pytest.mark.parametrize("memcached_kind", ["memcached"])  # memcached -o options, its LRU
def test_cachedump_on_a_segmented_lru_is_reported_partial(memcached_nodes, capsys) -> None:
    servers = memcached_nodes(1, ("-o", "no_lru_crawler"))
    nodes = f"n1:{servers[0].address}"
    with socket.create_connection(("127.0.0.1", servers[0].port), timeout=2) as sock:
        sock.sendall(
            b"".join(b"set k%d 0 0 1 noreply\r\nx\r\n" % i for i in range(500)) + b"mn\r\n"
        )
        assert sock.recv(100).endswith(b"MN\r\n")
    code, out, err = run(capsys, "sessions", "list", "--all", "--nodes", nodes)
    assert code == 0
    assert "listing is partial" in err and int(out.splitlines()[-1].split()[0]) < 500
    servers[0].kill()
