"""WSGI middleware: the session at `environ["pymsm.session"]`, loaded on first use, written
before the response is handed back (so a redirect right after login never reads stale data).

Locking: the session's lock (if the locking mode takes one) is held from the first use of the
session until the response body is closed. The app declares a request read-only or writing with
`environ["pymsm.access"] = "read" | "write"` before touching the session, or by wrapping a
`@pymsm.readonly` app. With `lock_failure='error'` a lock timeout answers 503 with Retry-After.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pymsm.config import Config
from pymsm.core.locking import ACCESS_KEY, declared_access
from pymsm.core.session import Session
from pymsm.exceptions import LockTimeout
from pymsm.manager import SessionManager

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ENVIRON_KEY = "pymsm.session"


class SessionMiddleware:
    def __init__(
        self,
        app: WSGIApplication,
        config: Config | None = None,
        *,
        manager: SessionManager | None = None,
        **settings: Any,
    ) -> None:
        self.app = app
        self.manager = manager or SessionManager(config, **settings)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        manager = self.manager
        if manager.ignores(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        sent = manager.read_cookie(environ.get("HTTP_COOKIE"))
        declared = declared_access(self.app)
        session = environ[ENVIRON_KEY] = manager.open(
            sent,
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("PATH_INFO", ""),
            lambda: environ.get(ACCESS_KEY, declared),
        )

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            manager.save(session)
            cookie = manager.set_cookie(session, sent)
            if cookie is not None:
                headers.append(("Set-Cookie", cookie))
            if session.accessed:
                headers.append(("Vary", "Cookie"))
            return start_response(status, headers, exc_info)

        try:
            return _Closing(self.app(environ, start), manager, session)
        except LockTimeout:
            manager.release(session)
            retry = str(manager.retry_after)
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("Retry-After", retry)],
                sys.exc_info(),
            )
            return [b"session busy, retry later\n"]
        except BaseException:
            manager.release(session)
            raise


class _Closing:
    """Saves again when the body is done, for apps that change the session while streaming."""

    def __init__(self, body: Iterable[bytes], manager: SessionManager, session: Session) -> None:
        self.body, self.manager, self.session = body, manager, session

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            try:
                if self.session.loaded and self.session.modified:
                    self.manager.save(self.session)
            finally:
                self.manager.release(self.session)
