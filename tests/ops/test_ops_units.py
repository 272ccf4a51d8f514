"""Unit tests of the inspection library: key kinds, metadump lines, redaction, progress, import."""

from __future__ import annotations

import io
import sys
import tomllib

import pytest

import pymsm.admin
from pymsm import Config
from pymsm.admin import doctor, tomcat
from pymsm.admin.scan import _metadump_line, classify
from pymsm.admin.sessions import redact
from pymsm.admin.stats import NodeStats, collect_config, parse_stats, rates
from pymsm.cli._common import Progress
from pymsm.exceptions import ConfigError

SID = "2A19B1EB6D9649C9FED3E7277FDFD470-n2"


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (SID, "primary"),
        ("validity:" + SID, "validity"),
        ("bak:" + SID, "backup"),
        ("bak:validity:" + SID, "backup_validity"),
        ("lock:" + SID, "lock"),
        ("tomb:" + SID, "tomb"),
        ("somethingelse", "other"),
        ("bak:not-an-id", "other"),
    ],
)
def test_classify_tells_pymsm_keys_apart(key: str, kind: str) -> None:
    found, sid = classify(key)
    assert found == kind
    assert sid == (None if kind == "other" else SID)


def test_classify_respects_the_storage_prefix() -> None:
    assert classify("shop_" + SID, "shop_") == ("primary", SID)
    assert classify("bak:shop_" + SID, "shop_") == ("backup", SID)
    assert classify(SID, "shop_") == ("other", None)


def test_metadump_line_is_decoded() -> None:
    line = b"key=bak%3Avalidity%3Ax exp=1700000100 la=1700000000 cas=3 fetch=no cls=1 size=90"
    assert _metadump_line(line) == ("bak:validity:x", 90, 1700000100, 1700000000)
    never = _metadump_line(b"key=k exp=-1 la=5 cas=1 fetch=no cls=1 size=60")
    assert never[2] is None


def test_redact_keeps_names_and_hides_values() -> None:
    shown = redact({"user": "alice", "cart": [1, 2], "n": 3, "nested": {"token": "x"}})
    assert shown == {
        "user": "<str, 5>",
        "cart": "<list, 2>",
        "n": "<int>",
        "nested": {"token": "<str, 1>"},
    }
    assert "alice" not in str(shown)


def test_rates_are_per_second_and_empty_after_a_restart() -> None:
    before = NodeStats("n1", "a", True, counters={"uptime": 10, "cmd_get": 100}, sampled_at=1.0)
    after = NodeStats("n1", "a", True, counters={"uptime": 12, "cmd_get": 300}, sampled_at=3.0)
    assert rates(before, after)["cmd_get"] == 100.0
    restarted = NodeStats("n1", "a", True, counters={"uptime": 1, "cmd_get": 1}, sampled_at=4.0)
    assert rates(after, restarted) == {}
    assert parse_stats({"uptime": "7", "version": "1.6", "bytes": "x"}) == {"uptime": 7}


def test_progress_draws_only_when_enabled() -> None:
    out = io.StringIO()
    bar = Progress(True, out)
    bar.start("n1", 4)
    for _ in range(6):  # more keys than estimated: never past 100%
        bar.advance()
    bar.done()
    assert "100% 6/6 keys" in out.getvalue()
    silent = io.StringIO()
    quiet = Progress(False, silent)
    quiet.start("n1", 1)
    quiet.advance()
    quiet.done()
    assert silent.getvalue() == ""


# -- Tomcat context.xml import (attributes as MSM documents them) -----------------------------

NON_STICKY = """<?xml version="1.0" encoding="UTF-8"?>
<Context path="/shop">
  <Manager className="de.javakaffee.web.msm.MemcachedBackupSessionManager"
    memcachedNodes="n1:host1.domain.com:11211 n2:host2.domain.com:11211"
    sticky="false"
    sessionBackupAsync="false"
    lockingMode="uriPattern:/path1|/path2"
    requestUriIgnorePattern=".*\\.(ico|png|gif|jpg|css|js)$"
    operationTimeout="1000"
    sessionBackupTimeout="100"
    storageKeyPrefix="static:shop,context.hash"
    sessionAttributeFilter="^(userName|sessionHistory)$"
    transcoderFactoryClass="de.javakaffee.web.msm.serializer.kryo.KryoTranscoderFactory"
    copyCollectionsForSerialization="true"
    customConverter="de.javakaffee.web.msm.serializer.kryo.WicketSerializerFactory"
    enableStatistics="true"
    enabled="true"
    backupThreadCount="4"
    memcachedProtocol="binary"
    username="admin"
    password="s3cret"
    />
</Context>
"""

STICKY = """<Server><Service name="Catalina"><Engine name="Catalina" jvmRoute="tomcat1">
<Host name="localhost"><Context path="">
  <Manager className="de.javakaffee.web.msm.MemcachedBackupSessionManager"
    memcachedNodes="n1:host1.domain.com:11211,n2:host2.domain.com:11211"
    failoverNodes="n1"
    sticky="true"
    requestUriIgnorePattern=".*\\.(png|gif|jpg|css|js)$"
    sessionBackupAsync="false"
    sessionBackupTimeout="100"
    transcoderFactoryClass="de.javakaffee.web.msm.serializer.javolution.JavolutionTranscoderFactory"
    />
</Context></Host></Engine></Service></Server>
"""


def test_import_non_sticky_carries_settings_and_warns_per_attribute(tmp_path) -> None:
    result = tomcat.parse(NON_STICKY)
    assert (
        result.settings["memcached_nodes"] == "n1:host1.domain.com:11211,n2:host2.domain.com:11211"
    )
    assert result.settings["sticky"] is False
    assert result.settings["operation_timeout"] == 1000  # ms, as MSM wrote it
    assert result.settings["context"] == "/shop"
    warned = " ".join(result.warnings)
    for name in (
        "transcoderFactoryClass",
        "copyCollectionsForSerialization",
        "customConverter",
        "enableStatistics",
        "enabled",
        "backupThreadCount",
        "memcachedProtocol",
        "username",
        "password",
    ):
        assert name in warned
    assert "s3cret" not in warned
    path = tmp_path / "pymsm.toml"
    path.write_text(tomcat.to_toml(result, "context.xml"))
    config = Config.from_file(str(path))
    assert config.operation_timeout == 1.0
    assert config.session_backup_timeout == 0.1
    assert config.locking_mode == "uriPattern:/path1|/path2"
    assert config.request_uri_ignore_pattern == r".*\.(ico|png|gif|jpg|css|js)$"
    assert config.key_prefix.startswith("shop_")


def test_import_sticky_takes_the_route_from_jvm_route() -> None:
    result = tomcat.parse(STICKY)
    assert result.settings["sticky"] is True
    assert result.settings["failover_nodes"] == "n1"
    assert result.settings["route"] == "tomcat1"
    document = tomllib.loads(tomcat.to_toml(result, "server.xml"))
    assert Config(**document["pymsm"]).nodes.failover == frozenset({"n1"})


def test_import_without_sticky_is_sticky_as_in_msm() -> None:
    """The sticky set-up of seed 000 names no `sticky` attribute: MSM's default is sticky, and
    the import wrote nothing, so pymsm ran it non-sticky."""
    result = tomcat.parse(
        """<Context>
  <Manager className="de.javakaffee.web.msm.MemcachedBackupSessionManager"
    memcachedNodes="n1:10.0.0.101:11211,n2:10.0.0.102:11211"
    failoverNodes="n1"
    requestUriIgnorePattern=".*\\.(ico|png|gif|jpg|css|js)$"
    transcoderFactoryClass="de.javakaffee.web.msm.serializer.kryo.KryoTranscoderFactory"
    />
</Context>"""
    )
    assert result.settings["sticky"] is True
    notes = " ".join(result.notes)
    assert "sticky was not set (MSM's default: true)" in notes
    assert "set `route` on each app node" in notes and "lockingMode" not in notes
    document = tomllib.loads(tomcat.to_toml(result, "context.xml"))
    assert Config(**document["pymsm"]).sticky is True


def test_import_warns_about_an_ignore_pattern_that_misses_static_files() -> None:
    """Seed 001's `.*/.(png|...)$` (a slash for a backslash) matches `/xpng`, not `/a.png`."""
    manager = """<Context><Manager className="de.javakaffee.web.msm.MemcachedBackupSessionManager"
        memcachedNodes="n1:localhost:11211" sticky="false" requestUriIgnorePattern="{}"/></Context>"""
    slipped = tomcat.parse(manager.format(".*/.(png|gif|jpg|css|js)$"))
    assert slipped.settings["request_uri_ignore_pattern"] == ".*/.(png|gif|jpg|css|js)$"
    [warning] = [w for w in slipped.warnings if "requestUriIgnorePattern" in w]
    assert "does not match /static/a.png" in warning and "did you mean" in warning
    fine = tomcat.parse(manager.format(r".*\.(ico|png|gif|jpg|css|js)$"))
    assert not [w for w in fine.warnings if "requestUriIgnorePattern" in w]


def test_import_refuses_doctype_and_files_without_msm() -> None:
    evil = '<!DOCTYPE x [<!ENTITY e "boom">]><Context><Manager className="x"/></Context>'
    with pytest.raises(ConfigError, match="DOCTYPE"):
        tomcat.parse(evil)
    with pytest.raises(ConfigError, match="MemcachedBackupSessionManager"):
        tomcat.parse(
            '<Context><Manager className="org.apache.catalina.session.StandardManager"/></Context>'
        )
    with pytest.raises(ConfigError, match="not well-formed"):
        tomcat.parse("<Context>")


def test_import_warns_about_regexes_python_cannot_read() -> None:
    result = tomcat.parse(
        '<Context><Manager className="de.javakaffee.web.msm.MemcachedBackupSessionManager" '
        'memcachedNodes="localhost:11211" requestUriIgnorePattern="(?&lt;x&gt;a)\\p{Alpha}"/></Context>'
    )
    assert "request_uri_ignore_pattern" not in result.settings
    assert any("requestUriIgnorePattern" in w for w in result.warnings)


def test_doctor_warns_about_an_ignore_pattern_that_misses_static_files() -> None:
    nodes = "n1:127.0.0.1:1,n2:127.0.0.1:2"
    _, findings = doctor.check_settings(
        {"memcached_nodes": nodes, "request_uri_ignore_pattern": ".*/.(png|css)$"}
    )
    [warning] = [f for f in findings if f.check == "request_uri_ignore_pattern"]
    assert warning.level == "warning" and "does not match /static/a.png" in warning.message
    _, findings = doctor.check_settings({"memcached_nodes": nodes})  # the default pattern
    assert not [f for f in findings if f.check == "request_uri_ignore_pattern"]


def test_redis_tools_without_redis_py_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymsm.admin.redis_admin", None)  # import fails as without
    monkeypatch.delattr(pymsm.admin, "redis_admin", raising=False)  # (imported by other tests)
    with pytest.raises(ConfigError, match=r"pip install 'pymsm\[redis\]'"):
        collect_config(Config(memcached_nodes="redis://127.0.0.1:6379/0"), 1.0, lambda: 0.0)


def test_doctor_on_redis_judges_replicas_persistence_and_policy() -> None:
    def server(**details: str | None) -> NodeStats:
        counters = {"bytes": 10, "limit_maxbytes": 100}
        base = {"role": "master", "replicas": "1", "aof_enabled": "1", "save": ""}
        base |= {"maxmemory_policy": "volatile-lru"}
        return NodeStats(
            "default", "h:1", True, counters=counters, kind="redis", details=base | details
        )

    assert [f.level for f in doctor.check_redis([server()], "sentinel")] == ["ok"]
    checks = {f.check: f.message for f in doctor.check_redis([server(replicas="0")], "cluster")}
    assert "--cluster-slave" in checks["default copies"]
    found = doctor.check_redis([server(aof_enabled="0", save="")], "single")
    assert [f.check for f in found] == ["default", "default persistence"]
    assert len(doctor.check_redis([server(aof_enabled="0", save=None)], "single")) == 1  # unknown
    found = doctor.check_redis([server(maxmemory_policy="noeviction")], "single")
    assert "noeviction" in found[-1].message
