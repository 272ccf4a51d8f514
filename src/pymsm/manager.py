"""SessionManager: drives the core flows against the stores, one request at a time.

The adapters call `open(cookie)` at the start of a request (a lazy session: nothing is read until
the app touches it), `save(session)` before the response leaves, and `set_cookie(session, sent)`
for the header to send. Everything a request decides lives in `pymsm.core.flows`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

from pymsm import cookies
from pymsm.config import Config
from pymsm.core import flows
from pymsm.core.codecs import Codec, JsonCodec, MsgpackCodec, PickleCodec, codec_by_name
from pymsm.core.ids import SessionId
from pymsm.core.nodes import Health
from pymsm.core.ops import Op, call_args
from pymsm.core.records import RecordFormat
from pymsm.core.session import Session
from pymsm.exceptions import ConfigError, InvalidSessionId, ItemTooLarge, StoreError
from pymsm.stores.base import Store

T = TypeVar("T")
log = logging.getLogger("pymsm")
_BASE = re.compile(r"\b([0-9A-F]{6})[0-9A-F]{26}\b")


def redact(text: str) -> str:
    """Session ids in log lines keep 6 hex digits: enough to correlate, useless to hijack."""
    return _BASE.sub(r"\1…", text)


class _Base:
    """What the sync and async managers share: configuration, health, codecs, contexts."""

    def __init__(
        self, config: Config | None, clock: Callable[[], float], settings: dict[str, Any]
    ) -> None:
        self.config = Config.from_settings(config, **settings)
        self.clock = clock
        cfg = self.config
        self.health = Health(dead_timeout=cfg.node_dead_timeout)
        self.format = RecordFormat(cfg.secret_keys, cfg.compress_threshold)
        self.codec = codec_by_name(cfg.codec, cfg.secret_keys[0] if cfg.secret_keys else None)
        self.decoders = _decoders(self.codec, bool(cfg.secret_keys))
        self._ignore = (
            re.compile(cfg.request_uri_ignore_pattern) if cfg.request_uri_ignore_pattern else None
        )
        self._filter = (
            re.compile(cfg.session_attribute_filter) if cfg.session_attribute_filter else None
        )
        self.stats: Counter[str] = Counter()

    def ignores(self, path: str) -> bool:
        """Requests whose path matches `request_uri_ignore_pattern` never touch a session."""
        return self._ignore is not None and self._ignore.fullmatch(path) is not None

    def context(self) -> flows.Context:
        cfg = self.config
        return flows.Context(
            cfg.nodes,
            self.health,
            self.format,
            self.codec,
            self.decoders,
            cfg.key_prefix,
            cfg.max_inactive_interval,
            self.clock(),
            route=cfg.route,
            backup_lookups=cfg.backup_lookups,
            attribute_filter=self._filter,
        )

    def parse_id(self, cookie: str | None) -> SessionId | None:
        if not cookie:
            return None
        try:
            return SessionId.parse(cookie)
        except InvalidSessionId as exc:
            self.stats["invalid_id"] += 1
            log.info("ignoring session cookie: %s; starting a new session", redact(str(exc)))
            return None

    def _loaded(self, ctx: flows.Context, session: Session, loaded: flows.Loaded) -> None:
        self.stats["load_" + loaded.status] += 1
        if loaded.status in ("corrupt", "unavailable"):
            log.warning(
                "session could not be read (%s): %s; serving a new session, the stored "
                "one is left as it is",
                loaded.status,
                redact(loaded.reason),
            )
        elif loaded.status == "expired":
            log.info("session expired: %s", loaded.reason)
        flows.fill(ctx, session, loaded)
        self._log_events(ctx)

    def _saved(self, ctx: flows.Context, session: Session, saved: flows.Saved) -> flows.Saved:
        self.stats["save_" + saved.status] += 1
        if saved.status == "failed":
            log.error(
                "session %s was not stored: %s", redact(str(session._sid)), redact(saved.reason)
            )
        elif saved.status == "gone":
            log.info("session %s %s", redact(str(session._sid)), saved.reason)
        self._log_events(ctx)
        return saved

    def _log_events(self, ctx: flows.Context) -> None:
        for event in ctx.events:
            log.warning("%s", redact(event))
        ctx.events.clear()

    def set_cookie(self, session: Session, sent: str | None) -> str | None:
        """The Set-Cookie value to send, or None: a new id once stored, a deletion after logout."""
        if not session.loaded:
            return None
        if session.record is not None and session.id != sent:
            return cookies.set_cookie(self.config, session.id)
        if session.invalidated and session.record is None and sent:
            return cookies.set_cookie(self.config, "", delete=True)
        return None

    def read_cookie(self, header: str | None) -> str | None:
        return cookies.read_cookie(header, self.config.cookie_name)


class SessionManager(_Base):
    """Sessions over the configured nodes, for threaded or single-threaded servers.

    `stores` maps node names to stores (tests pass memory stores); by default one memcached
    store per node. `clock` gives seconds since the epoch.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        stores: Mapping[str, Store] | None = None,
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> None:
        super().__init__(config, clock, settings)
        self.stores: Mapping[str, Store] = (
            stores if stores is not None else self._memcached_stores()
        )

    def _memcached_stores(self) -> dict[str, Store]:
        from pymsm.stores import make_stores

        return make_stores(self.config)  # memcached, or Redis for a Redis URL

    def run(self, flow: Generator[Op, Any, T]) -> T:
        """The sync driver: run each operation on its node's store, send back result or error."""
        try:
            op = next(flow)
            while True:
                op = flow.send(self._execute(op))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _execute(self, op: Op) -> Any:
        method, args = call_args(op)
        try:
            result = getattr(self.stores[op.node], method)(*args)
        except StoreError as exc:
            if not isinstance(exc, ItemTooLarge):
                self.health.failed(op.node, self.clock())
            return exc
        self.health.succeeded(op.node, self.clock())
        return result

    def open(self, cookie: str | None) -> Session:
        """A lazy session for the id in `cookie`: loaded on first use, new if absent or invalid."""
        return Session.lazy(lambda session: self._load_into(session, cookie))

    def load(self, cookie: str | None) -> Session:
        session = self.open(cookie)
        session._ensure()
        return session

    def _load_into(self, session: Session, cookie: str | None) -> None:
        ctx = self.context()
        sid = self.parse_id(cookie)
        loaded = self.run(flows.load(ctx, sid)) if sid else flows.Loaded("new")
        self._loaded(ctx, session, loaded)

    def save(self, session: Session) -> flows.Saved:
        """Write what the request changed. Never raises for store trouble: it logs and counts."""
        if not session.loaded:
            return flows.Saved("skipped")
        ctx = self.context()
        return self._saved(ctx, session, self.run(flows.save(ctx, session)))

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


def _decoders(codec: Codec, signed: bool) -> dict[int, Codec]:
    decoders: dict[int, Codec] = {JsonCodec.id: JsonCodec(), codec.id: codec}
    with contextlib.suppress(ConfigError):
        decoders[MsgpackCodec.id] = MsgpackCodec()
    if signed:
        decoders[PickleCodec.id] = PickleCodec()
    return decoders
