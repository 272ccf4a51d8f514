"""Looking at one session across the cluster: `msm sessions show` and `msm sessions delete`.

Records are decoded with the same RecordFormat, codecs and key layout as the app (a session the
app cannot read is reported as it would be: corrupt, unsigned, unknown codec). Attribute values
are redacted by default: an operator sees names, types and sizes, not a user's data.

Both read and delete through the app's own manager and its stores, so they work on memcached
nodes and on Redis (one logical node, `default`, whatever the deployment) alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymsm.config import Config
from pymsm.core import flows
from pymsm.core.codecs import Codec, JsonCodec, MsgpackCodec, PickleCodec, codec_by_name
from pymsm.core.flows import Keys
from pymsm.core.ids import SessionId
from pymsm.core.records import TOMBSTONE, RecordFormat, Validity
from pymsm.exceptions import ConfigError, RecordError, StoreError
from pymsm.manager import SessionManager
from pymsm.stores import Store


@dataclass
class Copy:
    """What one node holds of a session: the record copy and its validity."""

    node: str
    role: str  # primary or backup
    raw: bytes | None = None
    validity_raw: bytes | None = None
    created: int | None = None
    written: int | None = None
    max_inactive: int | None = None
    codec: int | None = None
    attributes: dict[str, Any] | None = None
    validity: Validity | None = None
    error: str = ""

    def to_dict(self, reveal: bool) -> dict[str, Any]:
        attrs = self.attributes
        return {
            "node": self.node,
            "role": self.role,
            "size": None if self.raw is None else len(self.raw),
            "created_ms": self.created,
            "written_ms": self.written,
            "max_inactive_s": self.max_inactive,
            "codec": self.codec,
            "validity": None
            if self.validity is None
            else {
                "max_inactive_s": self.validity.max_inactive,
                "last_accessed_ms": self.validity.last_accessed,
                "this_accessed_ms": self.validity.this_accessed,
                "expires_ms": self.validity.expires_at(),
            },
            "attributes": None if attrs is None else (attrs if reveal else redact(attrs)),
            "error": self.error,
        }


@dataclass
class Report:
    """Where a session lives and whether its copies agree."""

    session_id: str
    primary_node: str
    expected_backup: str | None
    copies: list[Copy] = field(default_factory=list)
    locked_on: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    no_backup: str = "one node"  # why no backup is expected, when none is

    @property
    def found(self) -> bool:
        return any(c.raw is not None for c in self.copies)

    @property
    def agree(self) -> bool | None:
        """Do primary and backup hold the same record and validity? None without both."""
        roles = {c.role: c for c in self.copies if c.raw is not None}
        if len(roles) < 2:
            return None
        primary, backup = roles["primary"], roles["backup"]
        return primary.raw == backup.raw and primary.validity_raw == backup.validity_raw


def redact(value: Any) -> Any:
    """Names stay, values become `<type, size>`: enough to debug, nothing to leak."""
    if isinstance(value, dict):
        return {str(k): redact(v) for k, v in value.items()}
    if isinstance(value, str | bytes | list | tuple | set | frozenset):
        return f"<{type(value).__name__}, {len(value)}>"
    return f"<{type(value).__name__}>"


def decoders(config: Config) -> dict[int, Codec]:
    """The codecs the app would read with (pickle only with a secret key, as in the app)."""
    secret = config.secret_keys[0] if config.secret_keys else None
    found: dict[int, Codec] = {JsonCodec.id: JsonCodec()}
    with contextlib.suppress(ConfigError):
        found[MsgpackCodec.id] = MsgpackCodec()
    with contextlib.suppress(ConfigError):
        configured = codec_by_name(config.codec, secret)
        found[configured.id] = configured
    if secret is not None:
        found[PickleCodec.id] = PickleCodec()
    return found


def decode_copy(copy: Copy, config: Config) -> None:
    """Fill the decoded fields of `copy` from its raw bytes; problems go to `copy.error`."""
    if copy.validity_raw is not None:
        try:
            copy.validity = Validity.decode(copy.validity_raw)
        except RecordError as exc:
            copy.error = f"validity: {exc}"
    if copy.raw is None:
        return
    codecs = decoders(config)
    fmt = RecordFormat(config.secret_keys, config.compress_threshold)
    try:
        codec = codecs.get(copy.raw[3]) if len(copy.raw) > 3 else None
        record = fmt.decode(copy.raw, require_signature=codec is not None and codec.needs_signature)
        copy.created, copy.written = record.created, record.written
        copy.max_inactive, copy.codec = record.max_inactive, record.codec_id
        if codec is None:
            raise RecordError(f"codec id {record.codec_id} is not enabled here")
        copy.attributes = codec.decode(record.payload)
    except RecordError as exc:
        copy.error = str(exc)


@contextlib.contextmanager
def _manager(config: Config, timeout: float) -> Iterator[SessionManager]:
    """The app's manager over its stores (memcached nodes, or Redis), each operation bounded by
    `timeout`; closed after."""
    manager = SessionManager(config, sticky=False, operation_timeout=timeout)
    try:
        yield manager
    finally:
        manager.close()


def _home(config: Config, sid: SessionId) -> str | None:
    """The node a session lives on: the one its id names (None: it names none), or the only
    one."""
    return sid.node if config.nodes.has_ids else config.nodes.nodes[0].name


def show(config: Config, sid: SessionId, timeout: float) -> Report:
    """Read every key of the session on every node (one multi-get per node)."""
    with _manager(config, timeout) as manager:
        return _show(config, sid, manager.stores)


def _show(config: Config, sid: SessionId, stores: Mapping[str, Store]) -> Report:
    nodes = config.nodes
    primary = _home(config, sid)
    if primary is None or primary not in nodes.names:
        raise ConfigError(
            f"session {sid} names node {sid.node!r}, which memcached_nodes does not list "
            f"({', '.join(nodes.names)})"
        )
    keys = Keys.of(config.key_prefix, sid)
    lock = "lock:" + keys.record
    after = nodes.after(primary) if nodes.has_ids else []
    report = Report(str(sid), primary, after[0] if after else None)
    if nodes.redis is not None:
        report.no_backup = "Redis keeps the copies"
    for node in nodes:
        wanted = [keys.record, keys.validity, keys.backup, keys.backup_validity, lock]
        try:
            found = stores[node.name].get_many(wanted)
        except StoreError as exc:
            report.unreachable[node.name] = str(exc)
            continue
        for role, rec, val in (
            ("primary", keys.record, keys.validity),
            ("backup", keys.backup, keys.backup_validity),
        ):
            if rec in found or val in found:
                copy = Copy(node.name, role, found.get(rec), found.get(val))
                decode_copy(copy, config)
                report.copies.append(copy)
        if lock in found:
            report.locked_on.append(node.name)
    return report


def delete(config: Config, sid: SessionId, timeout: float) -> tuple[dict[str, int], dict[str, str]]:
    """End the session as a logout does, then delete every key of it left on any node:
    (keys of it each node held, tombstones not counted; unreachable nodes).

    The app's own delete goes first (core `flows.delete`, in its sticky form whatever the app's
    mode): a logout tombstone on the session's node and its backup window, and a tombstone
    validity. A process that holds the session in memory (sticky mode) reads that validity
    before it serves its copy; deleting the keys alone made it look like a node that lost them,
    and the process served its copy and wrote it back (tenth session). Then every node is swept
    of the record, backup and lock keys (copies a relocation may have left outside the window);
    the tombstones stay."""
    with _manager(config, timeout) as manager:
        return _delete(config, sid, manager)


def _delete(
    config: Config, sid: SessionId, manager: SessionManager
) -> tuple[dict[str, int], dict[str, str]]:
    stores = manager.stores
    keys = Keys.of(config.key_prefix, sid)
    swept = [keys.record, keys.backup, keys.backup_validity, "lock:" + keys.record]
    held: dict[str, int] = {}
    unreachable: dict[str, str] = {}
    for node in config.nodes:
        try:
            found = stores[node.name].get_many([*swept, keys.validity])
            ended = found.get(keys.validity) == TOMBSTONE.encode()  # (deleted before)
            held[node.name] = len(found) - ended
        except StoreError as exc:
            unreachable[node.name] = str(exc)
    if not sum(held.values()):
        return held, unreachable
    manager.run(flows.delete(manager.context(), sid, sticky=True))
    home = _home(config, sid)
    for node in config.nodes:
        if node.name in unreachable:
            continue
        names = swept if node.name == home else [*swept, keys.validity]
        try:
            for key in names:
                stores[node.name].delete(key)
        except StoreError as exc:
            unreachable[node.name] = str(exc)
    return held, unreachable
