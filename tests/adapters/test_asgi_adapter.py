"""ASGI middleware in-process (httpx's ASGITransport) against real memcached: Starlette's
`request.session`, writes before the response starts, streaming, lifespan, ignored paths, and
no blocking call on the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteSessions
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pymsm.adapters.asgi import SessionMiddleware
from pymsm.async_manager import AsyncSessionManager
from pymsm.manager import SessionManager
from support import session_ops
from support.asgi_routes import client, count, logout
from support.servers import ServerProcess
from support.shared_nodes import shared_nodes

pytestmark = pytest.mark.integration
Nodes = Callable[[int], list[ServerProcess]]


async def peek(request: Request) -> Response:
    return PlainTextResponse("ok")


async def login(request: Request) -> Response:
    request.session.rotate_id()
    request.session["user"] = "ann"
    return PlainTextResponse("hi")


async def stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        request.session["streamed"] = True  # after the headers left
        yield b"b"

    return StreamingResponse(body())


async def static(request: Request) -> Response:
    return PlainTextResponse(str("session" in request.scope))


def make_app(nodes: str, **settings: object) -> SessionMiddleware:
    routes = [
        Route("/count", count),
        Route("/peek", peek),
        Route("/logout", logout),
        Route("/login", login),
        Route("/stream", stream),
        Route("/app.css", static),
    ]
    return SessionMiddleware(Starlette(routes=routes), memcached_nodes=nodes, **settings)


def nodes_of(servers: list[ServerProcess]) -> str:
    return ",".join(f"n{i + 1}:{s.address}" for i, s in enumerate(servers))


def test_session_lifecycle(memcached_nodes: Nodes) -> None:
    app = make_app(nodes_of(memcached_nodes(2)))

    async def scenario() -> None:
        async with client(app) as c:
            first = await c.get("/count")
            assert first.json() == {"count": 1}
            cookie = first.cookies["MSMSESSIONID"]
            assert "HttpOnly" in first.headers["set-cookie"]
            assert "SameSite=Lax" in first.headers["set-cookie"]
            assert first.headers["vary"] == "Cookie"
            second = await c.get("/count")
            assert second.json() == {"count": 2}
            assert "set-cookie" not in second.headers  # same id: no new cookie
            untouched = await c.get("/peek")
            assert "vary" not in untouched.headers  # not accessed: no Vary
            login_response = await c.get("/login")
            rotated = login_response.cookies["MSMSESSIONID"]
            assert rotated != cookie and rotated.split("-")[1] == cookie.split("-")[1]
            assert (await c.get("/count")).json() == {"count": 3}  # data kept across rotation
            c.cookies.clear()
            old = await c.get("/count", headers={"cookie": f"MSMSESSIONID={cookie}"})
            assert old.json() == {"count": 1}  # the id before rotation is dead
            c.cookies.clear()
            bye = await c.get("/logout", headers={"cookie": f"MSMSESSIONID={rotated}"})
            assert "Max-Age=0" in bye.headers["set-cookie"]
            c.cookies.clear()
            again = await c.get("/count", headers={"cookie": f"MSMSESSIONID={rotated}"})
            assert again.json() == {"count": 1}  # logged out: the session is gone
        await app.manager.close()

    asyncio.run(scenario())


def test_several_session_cookies_the_first_stored_one_is_used(memcached_nodes: Nodes) -> None:
    app = make_app(nodes_of(memcached_nodes(2)))

    async def scenario() -> None:
        async with client(app) as c:
            stored = (await c.get("/count")).cookies["MSMSESSIONID"]
            gone = "0" * 32 + stored[32:]
            c.cookies.clear()
            sent = {"cookie": f"MSMSESSIONID={gone}; MSMSESSIONID={stored}"}
            response = await c.get("/count", headers=sent)
            assert response.json() == {"count": 2} and "set-cookie" not in response.headers
        await app.manager.close()

    asyncio.run(scenario())


def test_a_cookie_header_split_in_several_fields_is_read_whole(memcached_nodes: Nodes) -> None:
    """HTTP/2 clients may send one `cookie` field per cookie (RFC 9113, 8.2.3), and an ASGI
    server may pass them on as they are; only the first was read."""
    app = make_app(nodes_of(memcached_nodes(2)))

    async def scenario() -> None:
        async with client(app) as c:
            stored = (await c.get("/count")).cookies["MSMSESSIONID"]
            c.cookies.clear()
            split = [("cookie", "theme=dark"), ("cookie", f"MSMSESSIONID={stored}")]
            response = await c.get("/count", headers=split)
            assert response.json() == {"count": 2} and "set-cookie" not in response.headers
        await app.manager.close()

    asyncio.run(scenario())


def test_streaming_and_ignored_paths_and_lifespan(memcached_nodes: Nodes) -> None:
    app = make_app(nodes_of(memcached_nodes(2)))

    async def scenario() -> None:
        async with client(app) as c:
            await c.get("/count")
            assert (await c.get("/stream")).text == "ab"
            assert (await c.get("/count")).json() == {"count": 2}
            ignored = await c.get("/app.css")
            assert ignored.text == "False" and "set-cookie" not in ignored.headers
            before = dict(app.manager.stats)
            await c.get("/app.css")
            assert app.manager.stats == before  # no load, no save
        messages: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "lifespan.startup"} if not messages else {"type": "lifespan.shutdown"}

        async def send(message: dict[str, object]) -> None:
            messages.append(message)

        await app({"type": "lifespan"}, receive, send)
        assert [m["type"] for m in messages] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        await app.manager.close()

    asyncio.run(scenario())


# -- the event loop never blocks ----------------------------------------------------------------


class DelayProxy:
    """A TCP proxy (own thread and loop) that delays every reply from upstream by `delay` s, so
    a blocking store call would hold the app's loop for that long."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream, self.delay, self.port = upstream, delay, 0
        self.writers: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        async def pipe(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
        ) -> None:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            self.writers += [writer, up_writer]
            await asyncio.gather(pipe(reader, up_writer, 0), pipe(up_reader, writer, self.delay))

        async def start() -> asyncio.Server:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            return server

        server = self.loop.run_until_complete(start())
        self.loop.run_forever()
        server.close()
        for writer in self.writers:
            writer.close()
        self.loop.run_until_complete(asyncio.sleep(0.05))
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def slow_memcached(memcached_nodes: Nodes) -> Iterator[str]:
    proxy = DelayProxy(memcached_nodes(1)[0].port, delay=0.15)
    yield f"127.0.0.1:{proxy.port}"
    proxy.stop()


def slow_callbacks(
    app: Callable[..., object],
    caplog: pytest.LogCaptureFixture,
    close: Callable[[], Awaitable[None]] | None = None,
) -> list[str]:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.1
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            for _ in range(3):
                await asyncio.gather(*(c.get("/count") for _ in range(5)))
        if close is not None:
            await close()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        asyncio.run(scenario(), debug=True)
    return [r.getMessage() for r in caplog.records if "took" in r.getMessage()]


def test_never_blocks_the_event_loop(slow_memcached: str, caplog: pytest.LogCaptureFixture) -> None:
    manager = AsyncSessionManager(memcached_nodes=slow_memcached, operation_timeout=2000)
    app = make_app(slow_memcached, manager=manager)
    assert slow_callbacks(app, caplog, manager.close) == []


def test_the_blocking_detector_sees_a_blocking_store(
    slow_memcached: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Control: the same app over the sync (blocking) manager trips the detector."""
    sync = SessionManager(memcached_nodes=slow_memcached, operation_timeout=2000)

    async def app(scope: dict[str, object], receive: object, send: Callable[..., object]) -> None:
        if scope["type"] != "http":
            return
        session = sync.load(None)
        session["count"] = 1
        sync.save(session)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert slow_callbacks(app, caplog), "a blocking store call must be reported"
    sync.close()


# -- the same requests against Starlette's own (cookie) SessionMiddleware -------------------


def differential_app(requests: list[session_ops.Request]) -> Starlette:
    async def run(request: Request) -> Response:
        index = int(request.path_params["index"])
        return PlainTextResponse(session_ops.run(request.session, requests[index]))

    return Starlette(routes=[Route("/run/{index}", run)])


@pytest.fixture(scope="module")
def shared_memcached() -> Iterator[str]:
    with shared_nodes("memcached") as setting:
        yield setting


@given(requests=session_ops.requests(), sticky=st.booleans(), processes=st.sampled_from([1, 2]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_request_sequence_behaves_as_with_starlettes_session(
    shared_memcached: str, requests: list[list[tuple[Any, ...]]], sticky: bool, processes: int
) -> None:
    """What each request finds in `request.session`, and whether the cookie is deleted: the
    same with pymsm as with Starlette's SessionMiddleware, for random request sequences:
    sticky or not, one app process or two taking turns (behind one route)."""
    theirs = StarletteSessions(differential_app(requests), secret_key="differential")
    mode: dict[str, Any] = {"sticky": True, "route": "app1"} if sticky else {}
    ours = [
        SessionMiddleware(differential_app(requests), memcached_nodes=shared_memcached, **mode)
        for _ in range(processes)
    ]
    served = 0

    async def alternate(scope: Any, receive: Any, send: Any) -> None:
        """Request n goes to process n mod `processes`, as a round-robin balancer sends it."""
        nonlocal served
        if scope["type"] == "http":
            served += 1
        await ours[served % processes](scope, receive, send)

    async def scenario() -> None:
        async with client(theirs) as a, client(alternate) as b:  # type: ignore[arg-type]
            for index in range(len(requests)):
                seen = []
                for c in (a, b):
                    response = await c.get(f"/run/{index}")
                    header = response.headers.get("set-cookie", "").lower()
                    deleted = "max-age=0" in header or "expires=thu, 01 jan 1970" in header
                    seen.append((response.text, deleted))
                assert seen[1] == seen[0], f"request {index}: {requests[index]}"
        for app in ours:
            await app.manager.close()

    asyncio.run(scenario())
