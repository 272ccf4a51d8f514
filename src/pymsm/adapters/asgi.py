"""ASGI middleware: the session at `scope["session"]`, so Starlette's and FastAPI's
`request.session` work unchanged (Starlette only asserts the key is there and returns it).

Loading cannot be lazy in async code, so the session is loaded before the app runs, except for
paths matching `request_uri_ignore_pattern`. It is written before `http.response.start` goes out
(a redirect right after login never reads stale data), and again when the body is done if a
streaming app changed it meanwhile. Websocket connections get the session loaded at connect,
read-only.

Lifespan messages pass through unchanged; when the app reports its shutdown done (or failed), the
stores' connections are closed first, so the app's own shutdown handlers can still use them.
Nothing depends on lifespan: with none (`uvicorn --lifespan off`) connections open on first use
and end with the process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pymsm.async_manager import AsyncSessionManager
from pymsm.config import Config
from pymsm.cookies import Sent
from pymsm.core.locking import ACCESS_KEY, NEVER_SAVED, declared_access
from pymsm.core.session import Session
from pymsm.exceptions import LockTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger("pymsm")
SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


class SessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        config: Config | None = None,
        *,
        manager: AsyncSessionManager | None = None,
        **settings: Any,
    ) -> None:
        self.app = app
        self.manager = manager or AsyncSessionManager(config, **settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_at_shutdown(send))
            return
        if scope["type"] not in ("http", "websocket") or self.manager.ignores(scope["path"]):
            await self.app(scope, receive, send)
            return
        manager = self.manager
        sent = manager.read_cookie(_cookie_header(scope))
        method = scope.get("method", "GET")
        try:
            if scope["type"] == "websocket":
                declared: str | None = NEVER_SAVED  # read at connect, never saved: no lock
            else:
                declared = scope.get(ACCESS_KEY) or declared_access(self.app)
            session = await manager.load(sent, method, scope["path"], declared)
        except LockTimeout as exc:
            await _unavailable(send, str(exc), manager.retry_after)
            return
        scope["session"] = session
        try:
            await self._serve(session, sent, scope, receive, send)
        finally:
            await manager.release(session)  # the lock, if the locking mode took one

    def _closing_at_shutdown(self, send: Send) -> Send:
        async def send_wrapper(message: Message) -> None:
            if message["type"] in SHUTDOWN_DONE:
                await self._close_stores()
            await send(message)

        return send_wrapper

    async def _close_stores(self) -> None:
        """After the app's shutdown handlers, before the server hears the shutdown is done. A
        store that fails to close is logged: the server's shutdown goes on."""
        try:
            await self.manager.close()
        except Exception:
            log.warning("pymsm: closing the session stores at shutdown failed", exc_info=True)

    async def _serve(
        self, session: Session, sent: Sent, scope: Scope, receive: Receive, send: Send
    ) -> None:
        manager = self.manager
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                await self._finish(session, sent, message)
            elif _last_body(message) and session.modified:
                await manager.save(session)  # changed while streaming: the headers are gone
            await send(message)

        await self.app(scope, receive, send_wrapper)
        if not started and session.modified:
            await manager.save(session)

    async def _finish(self, session: Session, sent: Sent, message: Message) -> None:
        manager = self.manager
        manager.end_if_emptied(session)
        await manager.save(session)
        headers = list(message.get("headers", []))
        cookie = manager.set_cookie(session, sent)
        if cookie is not None:
            headers.append((b"set-cookie", cookie.encode("latin-1")))
        if session.accessed:
            headers.append((b"vary", b"Cookie"))
        message["headers"] = headers


async def _unavailable(send: Send, reason: str, retry_after: int) -> None:
    """The session stayed locked (lock_failure='error'): 503 with Retry-After."""
    body = f"503 Service Unavailable: {reason}\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"retry-after", str(retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _last_body(message: Message) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body", False)


def _cookie_header(scope: Scope) -> str | None:
    """The Cookie header. HTTP/2 and HTTP/3 clients may split it into several fields (RFC 9113,
    8.2.3), and an ASGI server may pass them on as they are: they are joined, as for HTTP/1."""
    found = [value for key, value in scope.get("headers", ()) if key == b"cookie"]
    if not found:
        return None
    return b"; ".join(found).decode("latin-1")
