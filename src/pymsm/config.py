"""Settings, with MSM's names in snake_case. Parsed once, at the edge; invalid settings fail at
start-up with a message naming the setting and the fix.

Sources, later wins: defaults, a TOML file (`Config.from_file`), environment variables
(`MSM_MEMCACHED_NODES`, ...; read by `Config.from_settings` and `Config.from_file`), keyword
arguments. Every setting may come as a string, as the environment gives it: numbers, booleans
and durations are parsed, and an empty string leaves a setting whose default is "none" unset.

Durations accept a number in the unit MSM used for that setting (ms for `operation_timeout`,
`session_backup_timeout` and `lock_wait_timeout`; s for `lock_expiration` and
`max_inactive_interval`) or a string with a unit: "250ms", "2s", "30m", "1h".
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymsm.core.nodes import NodeList
from pymsm.exceptions import ConfigError

DEFAULT_IGNORE = r".*\.(ico|png|gif|jpe?g|svg|webp|css|js|map|woff2?|ttf|eot|txt)$"
LOCKING_MODES = ("none", "all", "auto", "optimistic")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{0,100}")
_MS = ("operation_timeout", "session_backup_timeout", "lock_wait_timeout")


def duration(name: str, value: Any, unit: str) -> float:
    """Seconds from a number in `unit` or a string with its own unit."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration such as 500ms or 2s, got {value!r}")
    if isinstance(value, int | float):
        return float(value) * _UNITS[unit]
    match = _DURATION.fullmatch(str(value))
    if match is None:
        raise ConfigError(
            f"{name}: cannot read {value!r} as a duration; write e.g. 500ms, 2s or 30m"
        )
    return float(match[1]) * _UNITS[match[2] or unit]


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class Config:
    """All settings. Construct with keyword arguments; string forms are parsed and validated."""

    memcached_nodes: str = field(default="", repr=False)  # a Redis URL may carry a password
    failover_nodes: str = ""
    sticky: bool = False
    route: str | None = None
    locking_mode: str = "optimistic"
    lock_expiration: float = 5.0
    lock_wait_timeout: float | None = None
    lock_failure: str = "proceed"
    request_uri_ignore_pattern: str | None = DEFAULT_IGNORE
    session_backup_async: bool = False
    session_backup_timeout: float = 0.1
    operation_timeout: float = 1.0
    max_inactive_interval: int = 1800
    storage_key_prefix: str = ""
    session_attribute_filter: str | None = None
    codec: str = "json"
    secret_key: str | bytes | tuple[str | bytes, ...] | None = field(default=None, repr=False)
    compress_threshold: int | None = None
    context: str = ""
    app_version: str = ""
    cookie_name: str = "MSMSESSIONID"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    cookie_secure: bool = False
    cookie_httponly: bool = True
    cookie_samesite: str | None = "Lax"
    cookie_partitioned: bool = False
    node_dead_timeout: float = 10.0
    backup_lookups: int = 2
    access_time_resolution: float | None = None
    sticky_cache_size: int = 10_000
    sticky_cache_bytes: int = 64 * 1024 * 1024
    backup_queue_size: int = 1000
    item_size_limit: int = 1024 * 1024  # memcached -I; Redis has none of its own
    store: str = field(
        default="", repr=False
    )  # alias of memcached_nodes, reads better for a Redis URL
    nodes: NodeList = field(init=False, repr=False, compare=False)
    key_prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.store and self.memcached_nodes not in ("", self.store):
            raise ConfigError("store is an alias of memcached_nodes: set one of them, not both")
        if self.store:
            set_(self, "memcached_nodes", self.store)
        for name in _UNSET_IF_EMPTY:
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                set_(self, name, None)
        if not self.memcached_nodes:
            raise ConfigError(
                "memcached_nodes is required: e.g. memcached_nodes='n1:10.0.0.1:11211,n2:10.0.0.2:11211' "
                "(or MSM_MEMCACHED_NODES in the environment)"
            )
        for name in _MS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, float):
                set_(self, name, duration(name, value, "ms"))
        for name, unit in (
            ("lock_expiration", "s"),
            ("node_dead_timeout", "s"),
            ("access_time_resolution", "s"),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, float):
                set_(self, name, duration(name, getattr(self, name), unit))
        if not isinstance(self.max_inactive_interval, int) or isinstance(
            self.max_inactive_interval, bool
        ):
            set_(
                self,
                "max_inactive_interval",
                int(duration("max_inactive_interval", self.max_inactive_interval, "s")),
            )
        for name in (
            "sticky",
            "session_backup_async",
            "cookie_secure",
            "cookie_httponly",
            "cookie_partitioned",
        ):
            set_(self, name, _bool(name, getattr(self, name)))
        if self.lock_wait_timeout is None:
            set_(self, "lock_wait_timeout", self.operation_timeout)
        self._check_durations()
        for name in (
            "sticky_cache_size",
            "sticky_cache_bytes",
            "backup_queue_size",
            "backup_lookups",
        ):
            set_(self, name, _whole_number(name, getattr(self, name), least=1))
        set_(self, "item_size_limit", _whole_number("item_size_limit", self.item_size_limit, 1024))
        if self.compress_threshold is not None:
            set_(
                self,
                "compress_threshold",
                _whole_number("compress_threshold", self.compress_threshold, least=0),
            )
        self._check_secret_key()
        self._check_choices()
        self._check_patterns()
        set_(self, "nodes", NodeList.parse(self.memcached_nodes, self.failover_nodes))
        set_(self, "key_prefix", self._prefix())

    def _check_durations(self) -> None:
        # (name, must be above zero): a lock or a write bounded by zero seconds cannot be made
        for name, strict in (
            ("operation_timeout", True),
            ("session_backup_timeout", True),
            ("lock_expiration", True),
            ("lock_wait_timeout", False),
            ("node_dead_timeout", False),
            ("access_time_resolution", False),
        ):
            seconds = getattr(self, name)
            if seconds is None or seconds > 0 or (seconds == 0 and not strict):
                continue
            unit = "ms" if name in _MS else "s"
            raise ConfigError(
                f"{name} must be {'above' if strict else 'at least'} zero, got {seconds:g}s "
                f"(a bare number is read in {unit}); write e.g. {'500ms' if unit == 'ms' else '5s'}"
            )

    def _check_secret_key(self) -> None:
        keys = self.secret_key
        if keys is None:
            return
        if isinstance(keys, list):
            keys = tuple(keys)  # a TOML file gives a list
            object.__setattr__(self, "secret_key", keys)
        if isinstance(keys, str | bytes):
            keys = (keys,)
        if not isinstance(keys, tuple) or not keys:
            raise ConfigError(
                f"secret_key: expected a key or a list of keys (the first signs), got {keys!r}"
            )
        for key in keys:
            if not isinstance(key, str | bytes) or not key:
                raise ConfigError(
                    "secret_key: an empty key signs nothing; set a key (a random string of 32 "
                    "bytes or more) or leave secret_key unset"
                )

    def _check_choices(self) -> None:
        mode = self.locking_mode
        if mode not in LOCKING_MODES and not mode.startswith("uriPattern:"):
            raise ConfigError(
                f"locking_mode: unknown mode {mode!r}; choose none, all, auto, optimistic or uriPattern:<regex>"
            )
        if self.lock_failure not in ("proceed", "error"):
            raise ConfigError(f"lock_failure: {self.lock_failure!r}; choose proceed or error")
        if self.cookie_samesite not in (None, "Lax", "Strict", "None"):
            raise ConfigError(
                f"cookie_samesite: {self.cookie_samesite!r}; choose Lax, Strict, None or leave unset"
            )
        if self.cookie_samesite == "None" and not self.cookie_secure:
            raise ConfigError(
                "cookie_samesite='None' needs cookie_secure=True (browsers reject it otherwise)"
            )
        if self.route is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.route):
            raise ConfigError(
                f"route: {self.route!r} may hold only letters, digits, _ and - (at most 64)"
            )
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", self.cookie_name):
            raise ConfigError(f"cookie_name: {self.cookie_name!r} is not a valid cookie name")

    def _check_patterns(self) -> None:
        for name in ("request_uri_ignore_pattern", "session_attribute_filter"):
            pattern = getattr(self, name)
            if pattern:
                _compile(name, pattern)
        if self.locking_mode.startswith("uriPattern:"):
            _compile("locking_mode", self.locking_mode.partition(":")[2])

    def _prefix(self) -> str:
        parts = []
        for token in filter(None, re.split(r"[\s,]+", self.storage_key_prefix)):
            if token.startswith("static:"):
                parts.append(token[len("static:") :])
            elif token in ("host", "host.hash"):
                host = socket.gethostname()
                parts.append(host if token == "host" else _hash(host))
            elif token in ("context", "context.hash"):
                parts.append(self.context if token == "context" else _hash(self.context))
            elif token in ("app_version", "webappVersion"):
                parts.append(self.app_version)
            else:
                raise ConfigError(
                    f"storage_key_prefix: unknown token {token!r}; use static:<text>, host, host.hash, "
                    "context, context.hash or app_version, separated by commas"
                )
        prefix = "_".join(p for p in parts if p)
        prefix = prefix + "_" if prefix else ""
        if not _PREFIX.fullmatch(prefix) or prefix.startswith(
            ("validity:", "bak:", "lock:", "tomb:")
        ):
            raise ConfigError(
                f"storage_key_prefix gives {prefix!r}: it may hold letters, digits and _.:- (100 at most) "
                "and must not start with validity:, bak:, lock: or tomb: (those name pymsm's own keys)"
            )
        return prefix

    @property
    def secret_keys(self) -> tuple[bytes, ...]:
        keys = self.secret_key
        if keys is None:
            return ()
        if isinstance(keys, str | bytes):
            keys = (keys,)
        return tuple(k.encode() if isinstance(k, str) else k for k in keys)

    # -- sources ----------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, config: Config | None = None, **settings: Any) -> Config:
        """A Config from keyword settings, on top of `config` (or of the environment)."""
        _check_names(settings, "")
        if config is not None:
            return dataclasses.replace(config, **settings) if settings else config
        return cls(**{**env_settings(), **settings})

    @classmethod
    def from_file(cls, path: str, **settings: Any) -> Config:
        # later wins: file, then the environment, then keyword arguments
        return cls(**{**read_settings_file(path), **env_settings(), **settings})


def setting_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config) if f.init]


# the settings whose default is None: an empty string (`MSM_ROUTE=`) leaves them unset; not
# secret_key, where an empty string is refused (it would sign with a known key)
_UNSET_IF_EMPTY = tuple(
    f.name
    for f in dataclasses.fields(Config)
    if f.init and f.default is None and f.name != "secret_key"
)


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    names = setting_names()
    return {n: environ[f"MSM_{n.upper()}"] for n in names if f"MSM_{n.upper()}" in environ}


def prefixed_settings(source: Mapping[str, Any]) -> dict[str, Any]:
    """Settings from a framework's config mapping: `MSM_MEMCACHED_NODES` -> memcached_nodes."""
    names = set(setting_names())
    return {
        k[4:].lower(): v
        for k, v in source.items()
        if k.startswith("MSM_") and k[4:].lower() in names
    }


def read_settings_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file: its [pymsm] table, or the top level. Unknown names raise."""
    import tomllib

    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    table = data.get("pymsm", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [pymsm] must be a table of settings")
    return file_settings(table, path)


def file_settings(table: Mapping[str, Any], path: str) -> dict[str, Any]:
    _check_names(table, f"{path}: ")
    return dict(table)


def _check_names(settings: Mapping[str, Any], where: str) -> None:
    """Unknown names raise, with the nearest known one (`session_codec` -> `codec`)."""
    names = setting_names()
    unknown = sorted(set(settings) - set(names))
    if not unknown:
        return
    near = [n for n in names if n.endswith("_" + unknown[0]) or unknown[0].endswith("_" + n)]
    near += difflib.get_close_matches(unknown[0], names, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ConfigError(
        f"{where}unknown setting {unknown[0]!r}; {hint}known settings: {', '.join(names)}"
    )


def _whole_number(name: str, value: Any, least: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = least - 1
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        number = least - 1
    if number < least:
        raise ConfigError(f"{name}: expected a whole number of at least {least}, got {value!r}")
    return number


def _compile(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{name}: {pattern!r} is not a valid regular expression: {exc}") from exc


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
