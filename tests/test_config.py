"""Settings as users give them: keyword arguments, and strings from the environment (`MSM_*`),
a TOML file or a framework's config. Every setting must reach the code with its own type, and a
bad value must fail at start-up naming the setting, never later on a request."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pymsm import SessionManager
from pymsm.config import _UNSET_IF_EMPTY, Config
from pymsm.exceptions import ConfigError
from pymsm.stores.memory import MemoryStore

NODES = "n1:127.0.0.1:11211,n2:127.0.0.1:11212"

# the string the environment gives for each non-text setting, and the value it must become
FROM_STRINGS: dict[str, tuple[str, object]] = {
    "sticky": ("true", True),
    "session_backup_async": ("1", True),
    "cookie_secure": ("yes", True),
    "cookie_httponly": ("off", False),
    "cookie_partitioned": ("on", True),
    "operation_timeout": ("250", 0.25),
    "session_backup_timeout": ("50", 0.05),
    "lock_wait_timeout": ("2s", 2.0),
    "lock_expiration": ("3", 3.0),
    "node_dead_timeout": ("30", 30.0),
    "access_time_resolution": ("0", 0.0),
    "max_inactive_interval": ("10m", 600),
    "backup_lookups": ("3", 3),
    "compress_threshold": ("1024", 1024),
    "sticky_cache_size": ("50", 50),
    "sticky_cache_bytes": ("100000", 100000),
    "item_size_limit": ("2097152", 2097152),
    "backup_queue_size": ("10", 10),
}


def test_every_number_and_flag_setting_is_parsed_from_a_string() -> None:
    """A new int, float or bool setting that is not listed here (and parsed) fails this test."""
    typed = {
        f.name
        for f in dataclasses.fields(Config)
        if f.init and re.search(r"\b(int|float|bool)\b", str(f.type))
    }
    assert typed == set(FROM_STRINGS)


@pytest.mark.parametrize("name", sorted(FROM_STRINGS))
def test_setting_from_the_environment_gets_its_type(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, expected = FROM_STRINGS[name]
    monkeypatch.setenv("MSM_MEMCACHED_NODES", NODES)
    monkeypatch.setenv(f"MSM_{name.upper()}", text)
    value = getattr(Config.from_settings(), name)
    assert value == expected
    assert type(value) is type(expected)


def test_manager_configured_from_the_environment_saves_and_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """compress_threshold and backup_lookups came through as str and failed on the first save
    (TypeError comparing int and str) and on the first backup search."""
    monkeypatch.setenv("MSM_COMPRESS_THRESHOLD", "100")
    monkeypatch.setenv("MSM_BACKUP_LOOKUPS", "1")
    stores = {"n1": MemoryStore(), "n2": MemoryStore()}
    manager = SessionManager(memcached_nodes=NODES, stores=stores)  # type: ignore[arg-type]
    session = manager.open(None)
    session["text"] = "x" * 500
    manager.save(session)
    sid = session.id
    node = sid.rsplit("-", 1)[1]
    stores[node].down = True  # the node in the id is down: the load searches the backup
    again = manager.open(sid)
    assert again["text"] == "x" * 500
    assert again.id != sid  # re-homed on the node that held the backup


@pytest.mark.parametrize("name", _UNSET_IF_EMPTY)
def test_empty_string_leaves_an_optional_setting_unset(name: str) -> None:
    unset = Config(memcached_nodes=NODES, **{name: ""})  # type: ignore[arg-type]
    assert getattr(unset, name) == getattr(Config(memcached_nodes=NODES), name)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"backup_lookups": 0}, "backup_lookups: expected a whole number of at least 1, got 0"),
        ({"backup_lookups": "two"}, "backup_lookups: expected a whole number"),
        ({"backup_lookups": 2.5}, "backup_lookups: expected a whole number"),
        ({"compress_threshold": -1}, "compress_threshold: expected a whole number of at least 0"),
        ({"compress_threshold": True}, "compress_threshold: expected a whole number"),
        ({"lock_expiration": 0}, "lock_expiration must be above zero, got 0s"),
        ({"operation_timeout": -1}, "(a bare number is read in ms)"),
        ({"session_backup_timeout": "0"}, "session_backup_timeout must be above zero"),
        ({"node_dead_timeout": "-1s"}, "node_dead_timeout must be at least zero, got -1s"),
        ({"lock_wait_timeout": "-5ms"}, "lock_wait_timeout must be at least zero"),
        ({"secret_key": ""}, "secret_key: an empty key signs nothing"),
        ({"secret_key": ("k" * 32, b"")}, "secret_key: an empty key signs nothing"),
        ({"secret_key": ()}, "secret_key: expected a key or a list of keys"),
    ],
)
def test_bad_value_names_the_setting(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(memcached_nodes=NODES, **settings)  # type: ignore[arg-type]
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("session_codec", "codec"),
        ("key_prefix", "storage_key_prefix"),
        ("operation_timout", "operation_timeout"),
        ("memcached_node", "memcached_nodes"),
    ],
)
def test_unknown_setting_suggests_the_nearest(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown setting '{name}'; did you mean '{suggestion}'"):
        Config.from_settings(memcached_nodes=NODES, **{name: "x"})


def test_unknown_setting_on_top_of_a_config_is_a_config_error() -> None:
    """It was a TypeError from dataclasses.replace."""
    base = Config(memcached_nodes=NODES)
    with pytest.raises(ConfigError, match="unknown setting 'stiky'; did you mean 'sticky'"):
        Config.from_settings(base, stiky=True)
    assert Config.from_settings(base, sticky="true").sticky is True


def test_settings_file_keys_list_and_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "pymsm.toml"
    path.write_text(f'[pymsm]\nmemcached_nodes = "{NODES}"\nsecret_key = ["new-key", "old-key"]\n')
    config = Config.from_file(str(path))
    assert config.secret_keys == (b"new-key", b"old-key")
    path.write_text(f'[pymsm]\nmemcached_nodes = "{NODES}"\nbackup_lookup = 2\n')
    with pytest.raises(ConfigError, match=r"pymsm.toml: unknown setting 'backup_lookup'; did you"):
        Config.from_file(str(path))
