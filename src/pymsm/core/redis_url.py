"""Redis URLs for `memcached_nodes` (or its alias `store`), parsed once at the config edge.

    redis://[[user]:password@]host[:port][/db]                 one server
    rediss://...                                               one server over TLS
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]

`rediss+sentinel://` and `rediss+cluster://` are the TLS forms. The password authenticates to the
Redis servers (the master and replicas, or the cluster nodes); sentinels that have a password of
their own take `?sentinel_password=...`. Other query options: `ssl_ca_certs`, `ssl_certfile`,
`ssl_keyfile`, `ssl_cert_reqs` (none, optional, required) for the TLS forms.

A Redis URL is one logical node named `default`, without node ids: high availability comes from
Redis (Sentinel failover, Cluster slots and replicas), so pymsm writes no backup copies there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from pymsm.exceptions import ConfigError

SCHEMES = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORTS = {"single": 6379, "sentinel": 26379, "cluster": 6379}
OPTIONS = ("sentinel_password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_SETTING = "memcached_nodes"
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?")
_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def is_url(text: str) -> bool:
    """Does this `memcached_nodes` value use URL syntax (scheme://)?"""
    return "://" in text


@dataclass(frozen=True)
class RedisUrl:
    """A parsed Redis URL. `kind` is single, sentinel or cluster; `hosts` are (host, port)."""

    kind: str
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, text: str) -> RedisUrl:
        """Parse `text`; raises ConfigError naming what is wrong and the form to use."""
        scheme, _, rest = text.strip().partition("://")
        if scheme.lower() not in SCHEMES:
            raise ConfigError(
                f"{_SETTING}: unknown scheme {scheme!r} in {_redact(text)!r}; use redis://, "
                "rediss://, redis+sentinel:// or redis+cluster://, or n1:host:port for memcached"
            )
        kind, tls = SCHEMES[scheme.lower()]
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, at, hostlist = netloc.rpartition("@")
        username, password = _userinfo(userinfo) if at else (None, None)
        hosts = tuple(_host_port(h, kind, text) for h in hostlist.split(",") if h)
        if not hosts:
            raise ConfigError(f"{_SETTING}: {_redact(text)!r} names no host; e.g. {_example(kind)}")
        if kind == "single" and len(hosts) > 1:
            raise ConfigError(
                f"{_SETTING}: {_redact(text)!r} lists several hosts; use redis+sentinel:// or "
                "redis+cluster:// for more than one server"
            )
        service, db = _path(kind, path, text)
        return cls(kind, tls, hosts, service, db, username, password, _options(query, text))

    def __str__(self) -> str:
        """The URL without its password: safe for logs and error messages."""
        scheme = next(s for s, v in SCHEMES.items() if v == (self.kind, self.tls))
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        user = f"{self.username or ''}:***@" if self.password else ""
        path = f"/{self.service}/{self.db}" if self.service else f"/{self.db}"
        return f"{scheme}://{user}{hosts}{'' if self.kind == 'cluster' else path}"


def _userinfo(text: str) -> tuple[str | None, str | None]:
    user, colon, password = text.partition(":")
    if not colon:  # redis://secret@host is read as a password, as redis-py does
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _host_port(text: str, kind: str, url: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"{_SETTING}: cannot read host {text!r} in {_redact(url)!r}; e.g. {_example(kind)}"
        )
    port = int(match[2]) if match[2] else DEFAULT_PORTS[kind]
    if not 0 < port < 65536:
        raise ConfigError(f"{_SETTING}: port {port} in {_redact(url)!r} is not in 1..65535")
    return match[1].strip("[]"), port


def _path(kind: str, path: str, url: str) -> tuple[str | None, int]:
    parts = [p for p in path.split("/") if p]
    service = None
    if kind == "sentinel":
        if not parts or not _SERVICE.fullmatch(parts[0]):
            raise ConfigError(
                f"{_SETTING}: {_redact(url)!r} needs the Sentinel service (master) name after "
                f"the hosts; e.g. {_example(kind)}"
            )
        service, parts = parts[0], parts[1:]
    if len(parts) > 1 or (parts and not parts[0].isdigit()):
        raise ConfigError(
            f"{_SETTING}: cannot read the database in {_redact(url)!r}; e.g. {_example(kind)}"
        )
    db = int(parts[0]) if parts else 0
    if kind == "cluster" and db != 0:
        raise ConfigError(
            f"{_SETTING}: Redis Cluster has only database 0; remove /{db} from {_redact(url)!r}"
        )
    return service, db


def _options(query: str, url: str) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"{_SETTING}: unknown option {unknown[0]!r} in {_redact(url)!r}; known: "
            f"{', '.join(OPTIONS)} (timeouts come from operation_timeout)"
        )
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in ("none", "optional", "required"):
        raise ConfigError(f"{_SETTING}: ssl_cert_reqs={reqs!r}; choose none, optional or required")
    return options


def _example(kind: str) -> str:
    return {
        "single": "redis://:password@10.0.0.1:6379/0",
        "sentinel": "redis+sentinel://:password@10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
        "cluster": "redis+cluster://10.0.0.1:6379,10.0.0.2:6379",
    }[kind]


def _redact(text: str) -> str:
    """Hide a password in a URL we could not parse, for error messages."""
    return re.sub(r"://[^/@]*@", "://***@", text.strip())
