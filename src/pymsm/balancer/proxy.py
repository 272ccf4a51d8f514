"""One client connection: read requests with h11, forward each to a backend, stream the answer.

Bodies are streamed event by event both ways (h11 decodes and re-encodes chunked framing), so
memory per connection is bounded by the read size, not the body size. A request is retried on
another backend when the connection failed before anything was sent, or when the method is
idempotent and no request body has been consumed yet (a consumed body cannot be replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import h11

from pymsm.balancer.errors import Abort, error_response
from pymsm.balancer.strategies import Choice, RequestInfo, parse_cookies
from pymsm.balancer.upstream import (
    BackendError,
    BackendFailed,
    BackendTimeout,
    ConnectFailed,
    Upstream,
    read_within,
)

if TYPE_CHECKING:
    from pymsm.balancer.server import Balancer

access_log = logging.getLogger("pymsm.balancer.access")
log = logging.getLogger("pymsm.balancer")

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1, plus the names listed in the Connection header itself
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"expect",  # we answer 100-continue ourselves
    }
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})


class BodyTooLarge(Exception):
    pass


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Drop hop-by-hop headers; keep chunked framing as the only Transfer-Encoding h11 needs."""
    drop = set(HOP_BY_HOP)
    chunked = False
    for name, value in headers:
        if name == b"connection":
            drop.update(token.strip() for token in value.lower().split(b","))
        elif name == b"transfer-encoding":
            chunked = True
    kept = [(name, value) for name, value in headers if name not in drop]
    if chunked:
        kept.append((b"transfer-encoding", b"chunked"))
    return kept


class ClientConnection:
    def __init__(
        self, balancer: Balancer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.balancer = balancer
        self.config = balancer.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client_ip: str = peer[0] if peer else "-"
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.limits.max_header_size
        )
        self.body_size = 0
        self._out: list[bytes] = []  # bytes queued for the client, sent by `flush()`

    async def run(self) -> None:
        try:
            while await self._serve_one():
                self.h11.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._reject(exc)
        except (TimeoutError, Abort, ConnectionError):
            pass
        finally:
            self.writer.close()

    async def _serve_one(self) -> bool:
        """Serve one request; True when the connection can carry another."""
        event = await self.next_event(idle=True)
        if isinstance(event, h11.ConnectionClosed):
            return False
        if not isinstance(event, h11.Request):
            raise h11.RemoteProtocolError(f"expected a request, got {type(event).__name__}", 400)
        start = time.monotonic()
        self.body_size = 0
        if head_size(event) > self.config.limits.max_header_size:
            # h11 only bounds a head still incomplete in its buffer; bound complete ones too
            await self.respond(431, "request head too large", close=True)
            return False
        status, backend = await self._handle(event)
        if self.config.access_log and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s "%s %s" %d %s %.1fms',
                self.client_ip,
                event.method.decode("latin-1"),
                event.target.decode("latin-1"),
                status,
                backend,
                (time.monotonic() - start) * 1000,
            )
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def _reject(self, exc: h11.RemoteProtocolError) -> None:
        """Malformed request or oversized head: an error response, never a traceback."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            reason = "request head too large" if status == 431 else f"malformed request: {exc}"
            access_log.info('%s "-" %d - %s', self.client_ip, status, reason)
            with contextlib.suppress(Abort, ConnectionError, h11.LocalProtocolError):
                await self.respond(status, reason, close=True)

    # --- one request

    async def _handle(self, request: h11.Request) -> tuple[int, str]:
        self.balancer.requests += 1
        limit = self.config.limits.max_body_size
        length = content_length(request)
        if length is not None and length > limit:
            await self.respond(
                413, f"body of {length} bytes is over the limit of {limit}", close=True
            )
            return 413, "-"
        if self.h11.client_is_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))
        status_path = self.config.status_path
        if status_path and request.target.split(b"?", 1)[0].startswith(status_path.encode()):
            return await self._status(request), "-"
        return await self._proxy(request)

    async def _proxy(self, request: h11.Request) -> tuple[int, str]:
        balancer = self.balancer
        cookies = parse_cookies([value for name, value in request.headers if name == b"cookie"])
        info = RequestInfo(self.client_ip, cookies)
        tried: set[str] = set()
        fresh = False
        while True:
            choice = balancer.strategy.choose(balancer.backends, info, tried, time.monotonic())
            if choice is None:
                retry_after = str(max(1, round(self.config.health.fail_timeout))).encode()
                await self.respond(503, "no backend is up", [(b"retry-after", retry_after)])
                return 503, "-"
            backend = choice.backend
            backend.active += 1
            backend.requests += 1
            try:
                upstream = await balancer.pools[backend.name].acquire(fresh)
            except ConnectFailed as exc:
                backend.active -= 1
                balancer.backend_failed(backend, str(exc))
                tried.add(backend.name)
                fresh = False
                continue
            try:
                status = await self._forward(request, choice, upstream)
            except BackendTimeout as exc:
                upstream.close()
                log.warning("backend %s timed out: %s", backend.name, exc)
                await self.respond(504, f"backend {backend.name} did not answer in time")
                return 504, backend.name
            except BackendError as exc:
                upstream.close()
                if not self._can_retry(request, upstream):
                    await self.respond(502, f"backend {backend.name} failed: {exc}")
                    return 502, backend.name
                if upstream.reused:  # keep-alive race: retry on a fresh connection, no blame
                    fresh = True
                else:
                    balancer.backend_failed(backend, str(exc))
                    tried.add(backend.name)
                continue
            except BodyTooLarge:
                upstream.close()
                limit = self.config.limits.max_body_size
                await self.respond(413, f"body is over the limit of {limit} bytes")
                return 413, backend.name
            except BaseException:
                upstream.close()
                raise
            finally:
                backend.active -= 1
            balancer.pools[backend.name].release(upstream)
            backend.count_response(status)
            return status, backend.name

    def _can_retry(self, request: h11.Request, upstream: Upstream) -> bool:
        if self.body_size or self.h11.their_state not in (h11.DONE, h11.MUST_CLOSE, h11.SEND_BODY):
            return False  # a consumed body cannot be replayed
        closed_unanswered = upstream.reused and upstream.h11.their_state is h11.SEND_RESPONSE
        return request.method in IDEMPOTENT or closed_unanswered

    async def _forward(self, request: h11.Request, choice: Choice, upstream: Upstream) -> int:
        """Send the request (streaming its body), then stream the response back."""
        headers = self._forward_headers(request, choice.backend.spec.address)
        upstream.write(h11.Request(method=request.method, target=request.target, headers=headers))
        # until the request's EndOfMessage: their state is then DONE, or MUST_CLOSE when the
        # client sent `Connection: close` (urllib, curl -H, HTTP/1.0)
        while self.h11.their_state is h11.SEND_BODY:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                self.body_size += len(event.data)
                if self.body_size > self.config.limits.max_body_size:
                    raise BodyTooLarge
                upstream.write(event)
                await upstream.drain()
            elif not isinstance(event, h11.EndOfMessage):
                raise Abort  # client closed mid-body
        upstream.write(h11.EndOfMessage())
        await upstream.drain()
        read_timeout = self.config.timeouts.read
        while True:
            event = await upstream.next_event(read_timeout)
            if isinstance(event, h11.Response):
                break
            if not isinstance(event, h11.InformationalResponse):
                raise BackendFailed(f"expected a response, got {type(event).__name__}")
        await self.send(self._response(event, choice), drain=False)
        return await self._stream_body(upstream, choice, event.status_code)

    async def _stream_body(self, upstream: Upstream, choice: Choice, status: int) -> int:
        """The head is queued; body events are queued too and sent whenever the backend has to be
        waited for, so a response that arrived whole leaves in one write (one syscall and one
        packet rather than one per event; the client is woken once)."""
        read_timeout = self.config.timeouts.read
        while True:
            try:
                event = await upstream.next_event(read_timeout, before_read=self.flush)
            except BackendError as exc:  # the head is out: all we can do is cut the client off
                log.warning("backend %s broke off a response: %s", choice.backend.name, exc)
                raise Abort from exc
            if isinstance(event, h11.Data):
                await self.send(event, drain=False)
            elif isinstance(event, h11.EndOfMessage):
                await self.send(h11.EndOfMessage())
                return status

    def _forward_headers(self, request: h11.Request, backend_address: str) -> Headers:
        forwarded = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
        prior = [value for name, value in request.headers if name == b"x-forwarded-for"]
        headers = [(n, v) for n, v in end_to_end(request.headers) if n not in forwarded]
        host = next((value for name, value in request.headers if name == b"host"), None)
        if host is None:
            headers.append((b"host", backend_address.encode()))
        headers.append((b"x-forwarded-for", b", ".join([*prior, self.client_ip.encode()])))
        headers.append((b"x-forwarded-proto", b"http"))
        headers.append((b"x-forwarded-host", host or backend_address.encode()))
        return headers

    def _response(self, response: h11.Response, choice: Choice) -> h11.Response:
        headers = end_to_end(response.headers)
        headers.append((b"x-proxy", self.config.name.encode()))
        headers.append((b"x-backend", choice.backend.name.encode()))
        if choice.set_cookie is not None:
            cookie = f"{self.config.route_cookie}={choice.set_cookie}; Path=/; HttpOnly"
            headers.append((b"set-cookie", cookie.encode()))
        return h11.Response(
            status_code=response.status_code, headers=headers, reason=response.reason
        )

    async def _status(self, request: h11.Request) -> int:
        """`GET <status_path>`: state as JSON; `POST <status_path>/<backend>/down|up`: control."""
        status_path = self.config.status_path or ""
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        rest = path[len(status_path) :].strip("/")
        name, _, action = rest.partition("/")
        if not rest and request.method in (b"GET", b"HEAD"):
            return await self.respond_json(200, self.balancer.state())
        if request.method == b"POST" and action in ("down", "up"):
            try:
                self.balancer.set_admin(name, down=action == "down")
            except KeyError:
                return await self.respond_json(404, {"error": f"no backend named {name!r}"})
            return await self.respond_json(200, self.balancer.state())
        hint = f"GET {status_path} or POST {status_path}/<backend>/down|up"
        return await self.respond_json(404, {"error": f"unknown status request; use {hint}"})

    # --- reading from and writing to the client

    async def next_event(self, idle: bool = False) -> h11.Event:
        timeouts = self.config.timeouts
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                raise h11.RemoteProtocolError("pipelined requests are not supported", 400)
            data = await read_within(self.reader, timeouts.idle if idle else timeouts.client)
            self.h11.receive_data(data)

    async def send(self, event: h11.Event, drain: bool = True) -> None:
        """Queue an event's bytes; with `drain`, send everything queued and wait for room."""
        data = self.h11.send(event)
        if data:
            self._out.append(data)
        if drain:
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued as one chunk and wait until the transport has room (this is
        the back-pressure that bounds memory per connection)."""
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self.writer.write(data)
        try:
            await self.writer.drain()
        except OSError as exc:
            raise Abort from exc

    async def respond(
        self, status: int, detail: str, headers: Headers | None = None, close: bool = False
    ) -> None:
        extra = list(headers or [])
        if close or self.h11.their_state is not h11.DONE:  # an unread body: connection unusable
            extra.append((b"connection", b"close"))
        response, body = error_response(status, detail, self.config.name, extra)
        await self.send(response, drain=False)
        await self.send(h11.Data(data=body), drain=False)
        await self.send(h11.EndOfMessage())

    async def respond_json(self, status: int, payload: object) -> int:
        body = json.dumps(payload, indent=2).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-proxy", self.config.name.encode()),
        ]
        if self.h11.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))
        await self.send(h11.Response(status_code=status, headers=headers), drain=False)
        await self.send(h11.Data(data=body), drain=False)
        await self.send(h11.EndOfMessage())
        return status


def content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def head_size(request: h11.Request) -> int:
    """Approximate size of a request head as sent: request line and header lines."""
    size = len(request.method) + len(request.target) + 12
    return size + sum(len(name) + len(value) + 4 for name, value in request.headers)
