"""Flask: `init_app(app, **settings)` installs a SessionInterface, so `flask.session` works as
before, stored in memcached.

Settings come from `app.config["MSM_..."]` (then keyword arguments win). The cookie follows
Flask's own settings (`SESSION_COOKIE_NAME`, `_DOMAIN`, `_PATH`, `_SECURE`, `_HTTPONLY`,
`_SAMESITE`, `_PARTITIONED`), not pymsm's `cookie_*`, so switching is a configuration change.
A permanent session (`session.permanent = True`) gets a cookie Max-Age and a store idle timeout
of `PERMANENT_SESSION_LIFETIME`; other sessions a browser-session cookie and pymsm's
`max_inactive_interval`. `session.clear()` ends a stored session, as it does with Flask's
cookie sessions. Requests matching `request_uri_ignore_pattern` get Flask's null session.
"""

from __future__ import annotations

from typing import Any, TypedDict

import flask
from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from pymsm.config import Config, prefixed_settings
from pymsm.cookies import Sent, sent_values
from pymsm.core.locking import ACCESS_KEY, declared_access
from pymsm.core.session import Session
from pymsm.exceptions import LockTimeout
from pymsm.manager import SessionManager

ENVIRON_KEY = "pymsm.session"
__all__ = ["FlaskSession", "PymsmSessionInterface", "init_app"]


class _CookieAttributes(TypedDict):
    domain: str | None
    path: str
    secure: bool
    httponly: bool
    samesite: str | None
    partitioned: bool


class FlaskSession(Session, SessionMixin):
    """pymsm's Session with what Flask's SessionMixin promises: `.new`, `.permanent` (stored as
    `_permanent`, as Flask does), and `.modified` / `.accessed` (pymsm's own tracking)."""

    sent: Sent = None  # the id or ids the client sent, for the cookie decision

    @property
    def new(self) -> bool:
        self._ensure()
        return self.is_new

    @new.setter
    def new(self, value: bool) -> None:
        self.is_new = value


class PymsmSessionInterface(SessionInterface):
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        if self.manager.ignores(request.path):
            return None  # Flask hands the view a null session: readable, empty, never stored
        sent = sent_values(request.cookies.getlist(self.get_cookie_name(app)))

        def access() -> str | None:  # asked at load time, when the endpoint is known
            view = app.view_functions.get(request.endpoint or "")
            declared = request.environ.get(ACCESS_KEY)
            return declared if isinstance(declared, str) else declared_access(view)

        session = self.manager.open_as(sent, FlaskSession, request.method, request.path, access)
        session.sent = sent
        request.environ[ENVIRON_KEY] = session
        return session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FlaskSession) or not session.loaded:
            return  # untouched: no load happened, nothing to write, no cookie, no Vary
        try:
            self._save(app, session, response)
        finally:
            self.manager.release(session)  # the lock, if the locking mode took one

    def _save(self, app: Flask, session: FlaskSession, response: Response) -> None:
        if session.accessed:
            response.vary.add("Cookie")
        manager = self.manager
        permanent = bool(session.data.get("_permanent"))
        if permanent:
            lifetime = int(app.permanent_session_lifetime.total_seconds())
            if session.max_inactive_interval != lifetime:
                session.max_inactive_interval = lifetime
        manager.end_if_emptied(session)
        wanted = self.should_set_cookie(app, session)  # before the save resets `modified`
        manager.save(session)
        update = manager.cookie_update(session, session.sent)
        name = self.get_cookie_name(app)
        attributes: _CookieAttributes = {  # SESSION_COOKIE_*, for setting and deleting alike
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
            "partitioned": bool(app.config.get("SESSION_COOKIE_PARTITIONED", False)),
        }
        if update is not None and update.delete:
            response.delete_cookie(name, **attributes)
        elif update is not None or (wanted and session.record is not None):
            max_age = int(app.permanent_session_lifetime.total_seconds()) if permanent else None
            expires = self.get_expiration_time(app, session)
            response.set_cookie(name, session.id, max_age=max_age, expires=expires, **attributes)


def init_app(app: Flask, config: Config | None = None, **settings: Any) -> SessionManager:
    """Store `app`'s sessions with pymsm; settings from `app.config["MSM_*"]`, then `settings`."""
    manager = SessionManager(config, **{**prefixed_settings(app.config), **settings})
    app.session_interface = PymsmSessionInterface(manager)
    app.extensions["pymsm"] = manager

    def busy(error: LockTimeout) -> Response:
        """lock_failure='error': the session stayed locked; the client may retry."""
        response = app.response_class(f"session busy, retry later: {error}\n", status=503)
        response.headers["Retry-After"] = str(manager.retry_after)
        return response

    app.register_error_handler(LockTimeout, busy)

    @app.teardown_request
    def release(_: BaseException | None) -> None:  # also when save_session never ran
        session = flask.request.environ.get(ENVIRON_KEY) if flask.has_request_context() else None
        if isinstance(session, FlaskSession):
            manager.release(session)

    return manager
