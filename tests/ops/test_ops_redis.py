"""The msm operations commands against real Redis (one server, and a Cluster) holding sessions
written by pymsm: stats, sessions list/count/show/delete, doctor, config show."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymsm import SessionManager
from pymsm.cli import main
from support.redis_servers import ClusterSetup, SentinelSetup, client, redis_server, wait_until
from support.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_node(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own: the listings count every key of the database."""
    server = redis_server(tmp_path).start()
    yield server
    server.kill()


def url_of(server: ServerProcess) -> str:
    return f"redis://{server.address}/0"


def write_sessions(url: str, count: int, **settings: str) -> list[str]:
    """Sessions with a record and a validity key each (the second request writes the access
    time); Redis keeps no backup keys."""
    manager = SessionManager(memcached_nodes=url, access_time_resolution=0, **settings)
    ids = []
    for i in range(count):
        session = manager.load(None)
        session["user"] = f"user{i}"
        assert manager.save(session).status == "stored"
        assert manager.save(manager.load(session.id)).status == "unchanged"
        ids.append(session.id)
    manager.close()
    return ids


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_reads_info(redis_node, capsys) -> None:
    url = url_of(redis_node)
    write_sessions(url, 2)
    code, out, _ = run(capsys, "stats", "--nodes", url)
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:3] == ["default", redis_node.address, "up"]
    code, out, _ = run(capsys, "stats", "--json", "--nodes", url)
    (node,) = json.loads(out)["nodes"]
    assert node["kind"] == "redis"
    assert node["counters"]["curr_items"] == 4 == client(redis_node.port).dbsize()
    assert node["counters"]["cmd_set"] >= 2  # the two records (validity keys too)
    assert node["details"]["role"] == "master"


def test_stats_of_a_redis_that_is_down(capsys) -> None:
    code, out, _ = run(capsys, "stats", "--nodes", f"redis://127.0.0.1:{free_port()}/0")
    assert code == 1
    assert "default is down" in out


def test_count_and_list_classify_the_keys(redis_node, capsys) -> None:
    url = url_of(redis_node)
    ids = write_sessions(url, 3)
    client(redis_node.port).set("not-a-session", b"x")
    code, out, _ = run(capsys, "sessions", "count", "--json", "--nodes", url)
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["sessions"], doc["backups"]) == (3, 0)
    assert doc["nodes"]["default"]["validity"] == 3
    assert doc["nodes"]["default"]["other"] == 1

    code, out, _ = run(capsys, "sessions", "list", "--json", "--nodes", url)
    assert code == 0
    listed = json.loads(out)
    primaries = [k for k in listed if k["kind"] == "primary"]
    assert sorted(k["session_id"] for k in primaries) == sorted(ids)
    for key in primaries:
        assert key["key"] == "{" + key["session_id"] + "}"  # the store's hash tag
        # the record lives 1.5x the idle timeout and a minute (core/context.py record_ttl)
        assert 2700 < key["ttl"] <= 2760 and key["size"] > 20 and key["idle"] is not None
    assert not any(k["kind"] == "other" for k in listed)  # only with --all
    code, out, _ = run(capsys, "sessions", "list", "--all", "--nodes", url)
    assert "not-a-session" in out and out.rstrip().endswith(
        "7 keys: 3 primary, 3 validity, 1 other"
    )


def test_show_decodes_and_delete_ends_the_session(redis_node, capsys) -> None:
    url = url_of(redis_node)
    sid = write_sessions(url, 1)[0]
    code, out, _ = run(capsys, "sessions", "show", sid, "--json", "--nodes", url)
    assert code == 0, out
    doc = json.loads(out)
    assert doc["found"] and doc["problems"] == []
    (copy,) = doc["copies"]
    assert (copy["node"], copy["role"], copy["attributes"]) == (
        "default",
        "primary",
        {"user": "<str, 5>"},
    )
    code, out, _ = run(capsys, "sessions", "show", sid, "--reveal", "--nodes", url)
    assert '"user0"' in out
    assert "backup     none (Redis keeps the copies)" in out and "MISSING" not in out

    code, out, _ = run(capsys, "sessions", "delete", sid, "--nodes", url)
    assert (code, out) == (0, "default: deleted 2 keys\n")
    manager = SessionManager(memcached_nodes=url)
    session = manager.load(sid)
    assert session.id != sid and "user" not in session
    manager.close()
    code, _, err = run(capsys, "sessions", "delete", sid, "--nodes", url)
    assert code == 1 and "no key of session" in err


def test_doctor_judges_copies_and_memory(redis_node, capsys) -> None:
    url = url_of(redis_node)
    code, out, _ = run(capsys, "doctor", "--json", "--nodes", url)
    assert code == 0, out  # warnings only
    found = {(f["level"], f["check"]) for f in json.loads(out)["findings"]}
    assert ("ok", "default") in found
    assert f"Redis single (redis://{redis_node.address}/0)" in out
    assert ("warning", "default copies") in found  # no replica
    assert ("warning", "default persistence") in found  # --save "" --appendonly no
    assert ("warning", "default memory") in found  # no maxmemory
    assert not any(check == "memcached_nodes" for _, check in found)  # no memcached advice

    redis = client(redis_node.port)
    redis.config_set("maxmemory", 64 * 2**20)
    redis.config_set("appendonly", "yes")
    code, out, _ = run(capsys, "doctor", "--nodes", url)
    assert code == 0
    assert "persistence" not in out and "no maxmemory" not in out
    assert "% of 64 MiB used" in out

    redis.config_set("maxmemory-policy", "noeviction")
    code, out, _ = run(capsys, "doctor", "--nodes", url)
    assert "maxmemory-policy noeviction" in out

    down = f"redis://127.0.0.1:{free_port()}/0"
    code, out, _ = run(capsys, "doctor", "--nodes", down)
    assert code == 1 and "PROBLEM  default" in out and "unreachable" in out


def test_config_show_hides_the_redis_password(capsys) -> None:
    code, out, _ = run(capsys, "config", "show", "--nodes", "redis://:s3cret@127.0.0.1:6399/2")
    assert code == 0
    assert "s3cret" not in out and "redis://:***@127.0.0.1:6399/2" in out


def test_a_cluster_is_read_primary_by_primary(
    redis_cluster: ClusterSetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_cluster.url
    prefix = "static:opsredis"  # the cluster fixture is shared by the module: count our keys only
    ids = write_sessions(url, 12, storage_key_prefix=prefix)
    code, out, _ = run(capsys, "stats", "--json", "--nodes", url)
    assert code == 0
    nodes = json.loads(out)["nodes"]
    assert sorted(n["node"] for n in nodes) == sorted(n.address for n in redis_cluster.nodes)

    settings_file = tmp_path / "pymsm.toml"  # (no flag names the prefix)
    settings_file.write_text(f'[pymsm]\nstorage_key_prefix = "{prefix}"\n')
    settings = ("--nodes", url, "--config", str(settings_file))
    code, out, _ = run(capsys, "sessions", "count", "--json", *settings)
    assert code == 0, out
    doc = json.loads(out)
    assert doc["sessions"] == 12 and doc["unreachable"] == {}
    assert len(doc["nodes"]) == 3  # every primary, those without one of ours too
    code, out, _ = run(capsys, "sessions", "show", ids[0], "--json", *settings)
    assert code == 0 and json.loads(out)["copies"][0]["node"] == "default"
    code, out, _ = run(capsys, "sessions", "delete", ids[0], *settings)
    assert code == 0
    code, out, _ = run(capsys, "sessions", "count", "--json", *settings)
    assert json.loads(out)["sessions"] == 11


def test_sentinel_names_the_master_it_reads(redis_sentinel: SentinelSetup, capsys) -> None:
    url = redis_sentinel.url
    sid = write_sessions(url, 1)[0]
    code, out, _ = run(capsys, "stats", "--json", "--nodes", url)
    assert code == 0
    (node,) = json.loads(out)["nodes"]
    assert node["address"] == redis_sentinel.master.address
    assert (node["details"]["role"], node["details"]["replicas"]) == ("master", "1")
    code, out, _ = run(capsys, "doctor", "--json", "--nodes", url)
    checks = {f["check"] for f in json.loads(out)["findings"]}
    assert "default copies" not in checks  # the replica holds them
    code, out, _ = run(capsys, "sessions", "count", "--json", "--nodes", url)
    assert json.loads(out)["sessions"] == 1
    code, out, _ = run(capsys, "sessions", "show", sid, "--json", "--nodes", url)
    assert code == 0 and json.loads(out)["found"]


def test_a_cluster_primary_down_is_named(tmp_path: Path, capsys) -> None:
    """A cluster of its own: one primary is killed. Its row is down and the listing says which
    keys it could not read, while the other primaries are still read."""
    setup = ClusterSetup(tmp_path).start()
    try:
        write_sessions(setup.url, 6)
        dead = setup.nodes[1]
        dead.kill()
        code, out, _ = run(capsys, "stats", "--json", "--nodes", setup.url)
        assert code == 1
        state = {n["node"]: n["up"] for n in json.loads(out)["nodes"]}
        assert state == {n.address: n is not dead for n in setup.nodes}
        code, out, err = run(capsys, "sessions", "count", "--json", "--nodes", setup.url)
        assert code == 1
        doc = json.loads(out)
        assert list(doc["unreachable"]) == [dead.address] and dead.address in err
        assert set(doc["nodes"]) == {n.address for n in setup.nodes if n is not dead}
    finally:
        setup.stop()


def test_listing_leaves_the_keys_idle_time_alone(redis_node, capsys) -> None:
    """A listing must not look like traffic: Redis evicts by idle time (LRU). A first version
    asked STRLEN, which reset every key's idle time to 0."""
    url = url_of(redis_node)
    sid = write_sessions(url, 1)[0]
    redis = client(redis_node.port)
    record = "{" + sid + "}"
    wait_until(lambda: redis.object("idletime", record) >= 2, 10, "the record idle for 2 s")
    for _ in range(2):
        code, out, _ = run(capsys, "sessions", "list", "--json", "--nodes", url)
        assert code == 0
        (primary,) = [k for k in json.loads(out) if k["kind"] == "primary"]
        assert primary["idle"] >= 2
    assert redis.object("idletime", record) >= 2
