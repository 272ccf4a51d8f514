"""Django: `SESSION_ENGINE = "pymsm.adapters.django"` and `"pymsm.adapters.django.SessionMiddleware"`
in place of Django's session middleware. `request.session` keeps Django's whole API, sync and async.

Settings come from `settings.MSM_*` (`MSM_MEMCACHED_NODES`, ...). The cookie follows Django's
`SESSION_COOKIE_*` settings. The store idle timeout of a session is Django's `get_expiry_age()`
(`SESSION_COOKIE_AGE`, or what `set_expiry` chose), refreshed on every request that uses the
session (Tomcat's sliding idle timeout rather than Django's age-since-last-save).

Keys: Django code may pass any string (`SessionStore("abc")`). Only keys in pymsm's id format
(`<32 hex>-<node>[.<route>]`) are accepted; any other key is treated as unknown, exactly like an
absent cookie (the store starts a new session under a fresh id; no store key is built from it).
Collisions on create cannot happen in practice (128-bit ids); if `add` finds the id taken the
flows pick another id, so `CreateError` is never raised. `clear_expired()` is a no-op: memcached
expires items itself (every key carries a TTL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.utils.http import http_date

from pymsm.config import prefixed_settings
from pymsm.cookies import Sent, read_cookie
from pymsm.core.flows import Saved
from pymsm.core.ids import SessionId
from pymsm.core.locking import ACCESS_KEY, declared_access
from pymsm.core.session import Session
from pymsm.exceptions import InvalidSessionId, LockTimeout
from pymsm.manager import SessionManager

__all__ = ["SessionMiddleware", "SessionStore", "manager"]

_IMMUTABLE = (str, int, float, bool, type(None), bytes)
_lock = threading.Lock()
_manager: SessionManager | None = None


def manager() -> SessionManager:
    """The process's manager, built from `settings.MSM_*` on first use."""
    global _manager
    with _lock:
        if _manager is None:
            names = {n: getattr(settings, n) for n in dir(settings) if n.startswith("MSM_")}
            _manager = SessionManager(**prefixed_settings(names))
        return _manager


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _manager
    if setting.startswith("MSM_"):
        with _lock:
            if _manager is not None:
                _manager.close()
            _manager = None


setting_changed.connect(_reset)


class SessionStore(SessionBase):
    """Django's SessionBase over a pymsm Session (`self.pymsm` once loaded or created)."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self.pymsm: Session | None = None
        self.ignored = False  # set by the middleware for request_uri_ignore_pattern paths
        # set by the middleware: method, path and the view's declared access, for locking
        self.request: tuple[str, str, Callable[[], str | None]] | None = None
        self.saved = False  # stored during this request
        self.sent: Sent = None  # set by the middleware when the client sent several cookies

    def _validate_session_key(self, key: str | None) -> bool:
        if not key:
            return False
        try:
            SessionId.parse(key)
        except InvalidSessionId:
            return False
        return True

    # -- shared by the sync and async paths ---------------------------------------------------

    _session_cache: dict[str, Any]

    def _data(self, no_load: bool = False) -> dict[str, Any]:
        """Django's `_get_session`: the attributes, loaded on first use unless `no_load`."""
        self.accessed = True
        if "_session_cache" not in self.__dict__:
            no_key = self.session_key is None or no_load
            self._session_cache = {} if no_key else self.load()
        return self._session_cache

    def _adopt(self, session: Session) -> dict[str, Any]:
        self.pymsm = session
        if session.is_new:  # unknown, expired or unreadable: Django's convention
            self._session_key = None
            return {}
        self._session_key = session.id  # a load may re-home it to another node
        return dict(session.data)

    def _prepare(self, session: Session, must_create: bool) -> Session:
        """Copy Django's dict into the pymsm session, key by key (for per-key merge)."""
        data = self._data(no_load=must_create)
        current = session.data
        for key in [k for k in current if k not in data]:
            del session[key]
        for key, value in data.items():
            # mutable values may have changed in place: always hand them over
            if current.get(key, _IMMUTABLE) is not value or not isinstance(value, _IMMUTABLE):
                session[key] = value
        if self.modified or session.is_new:
            age = self.get_expiry_age()
            if session.max_inactive_interval != age:
                session.max_inactive_interval = age
        if must_create:
            session.modified = True  # Django stores a created session even when empty
        return session

    def _stored(self, session: Session, saved: Saved) -> None:
        if saved.status == "gone":
            raise UpdateError(f"session {self.session_key} was deleted meanwhile: {saved.reason}")
        self.saved = True
        if session.record is not None:
            self._session_key = session.id  # relocation or a taken id may have changed it

    def _attach(self, session: Session) -> None:
        """A save of a key never loaded: it must exist (Django's `UpdateError` otherwise)."""
        if session.is_new:
            raise UpdateError(f"session {self.session_key} does not exist (deleted or expired)")
        self.pymsm = session
        if "_session_cache" not in self.__dict__:
            self._session_cache = dict(session.data)

    def _target(self, must_create: bool) -> Session:
        if not must_create:
            assert self.pymsm is not None and self.session_key is not None
            if self.pymsm.is_new:  # loaded and not found: Django creates then
                return self._new()
            return self.pymsm
        if self.pymsm is not None and not self.pymsm.is_new:
            raise CreateError(f"session {self.session_key} exists already")
        return self._new()

    def _new(self) -> Session:
        session = self.pymsm
        if session is None or not session.is_new:
            session = manager().load(None)  # a fresh id; no store round trip
        self.pymsm = session
        self._session_key = session.id
        return session

    # -- sync API -------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        if self.ignored:
            return {}
        if self.request is None:
            return self._adopt(manager().load(self.session_key))
        session = manager().open(self.sent or self.session_key, *self.request)  # may lock
        session._ensure()
        return self._adopt(session)

    def exists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        return not manager().load(session_key).is_new

    def create(self) -> None:
        self._new()
        self.save(must_create=True)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        if self.ignored:
            return
        if self.session_key is None and not must_create:
            self.create()
            return
        if not must_create and self.pymsm is None:
            self._attach(manager().load(self.session_key))
        if self.get_expiry_age() <= 0:  # expired by set_expiry: gone, as Django's backends do
            manager().delete(self.session_key)
            return
        session = self._prepare(self._target(must_create), must_create)
        self._stored(session, manager().save(session))

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            session_key, self.pymsm = self.session_key, None
        manager().delete(session_key)

    def cycle_key(self) -> None:
        """A new id for the same data (login); the old id is deleted."""
        self._data()
        session = self.pymsm
        if session is None or session.is_new or self.session_key is None:
            data = self._data()
            self.create()
            self._session_cache = data
            return
        session.rotate_id()
        self._stored(session, manager().save(self._prepare(session, False)))
        self.modified = True

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: memcached drops expired items itself."""

    # -- async API ------------------------------------------------------------------------------
    # SessionBase's a* methods run the sync ones in a thread (asgiref's sync_to_async), which is
    # what this store wants: under WSGI Django runs each async view in a fresh event loop, where a
    # loop-bound connection could not be reused; the sync store's per-thread connections are.

    async def acycle_key(self) -> None:
        await sync_to_async(self.cycle_key)()

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do: memcached drops expired items itself."""


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware (its save and cookie rules, no save on 5xx) plus pymsm's:
    ignored paths never touch the store, a session used but not changed gets its idle timeout
    extended, and a session whose id moved (node failover) gets its new cookie."""

    def process_request(self, request: HttpRequest) -> None:
        name = settings.SESSION_COOKIE_NAME
        header = request.META.get("HTTP_COOKIE", "")
        sent = read_cookie(header, name) if header.count(name + "=") > 1 else None
        store = self.SessionStore
        if isinstance(sent, tuple) and issubclass(store, SessionStore):
            # Django's COOKIES keeps the last value; pymsm tries them in turn (pymsm.cookies)
            request.session = store(sent[0])
            request.session.sent = sent
        else:
            super().process_request(request)
        session = request.session
        if not isinstance(session, SessionStore):
            return
        if manager().ignores(request.path_info):
            session.ignored = True

        def access() -> str | None:  # asked when the session loads, usually inside the view
            declared = request.META.get(ACCESS_KEY)
            view = getattr(request, "_pymsm_view", None)
            return declared if isinstance(declared, str) else declared_access(view)

        session.request = (request.method or "GET", request.path_info, access)

    def process_view(self, request: HttpRequest, view: Any, *args: Any) -> None:
        request._pymsm_view = view  # type: ignore[attr-defined]  # for @pymsm.readonly

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, LockTimeout):
            return None
        response = HttpResponse(f"session busy, retry later: {exception}\n", status=503)
        response["Retry-After"] = str(manager().retry_after)
        return response

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        try:
            return self._respond(request, response)
        finally:
            store = getattr(request, "session", None)
            if isinstance(store, SessionStore) and store.pymsm is not None:
                manager().release(store.pymsm)  # the lock, if the locking mode took one

    def _respond(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response = super().process_response(request, response)
        store = getattr(request, "session", None)
        if not isinstance(store, SessionStore) or store.ignored or store.pymsm is None:
            return response
        if response.status_code >= 500:
            return response
        sessions, session = manager(), store.pymsm
        if not store.saved and session.record is not None:
            sessions.save(session)  # unchanged: validity (and lifetime) only
        update = sessions.cookie_update(
            session, store.sent or request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        )
        moved = update is not None and not update.delete and not store.is_empty()
        if moved and settings.SESSION_COOKIE_NAME not in response.cookies:
            _set_cookie(response, store)  # the id changed (failover) though the data did not
        return response


def _set_cookie(response: HttpResponse, store: SessionStore) -> None:
    """The session cookie as Django's middleware writes it."""
    max_age: int | None = None
    expires: str | None = None
    if not store.get_expire_at_browser_close():
        max_age = store.get_expiry_age()
        expires = http_date(time.time() + max_age)
    response.set_cookie(
        settings.SESSION_COOKIE_NAME,
        store.session_key or "",
        max_age=max_age,
        expires=expires,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=bool(settings.SESSION_COOKIE_SECURE),
        httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )
