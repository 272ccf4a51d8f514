"""A tiny app node for the balancer tests: `python balancer_backend.py NAME PORT`.

One asyncio process on h11 (keep-alive, chunked both ways), so SIGKILL takes it down at once.

GET  /healthz            200 ok
GET  /slow?s=SECONDS     answers after a sleep
GET  /inflight           JSON with `slow`: how many /slow requests are sleeping now
GET  /hold?id=X          sends a first chunk, then the rest once /release?id=X arrives
GET  /release?id=X       releases /hold?id=X
GET  /stream?n=N&size=S  N chunks of S bytes, chunked
POST /upload             consumes the body; answers its length, sha256 and framing
*                        JSON: backend name, method, path, headers, connection id
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import h11

NAME = sys.argv[1]
Sender = Callable[..., Awaitable[None]]
SLOW: list[str] = []  # requests sleeping in /slow right now
HOLDS: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    conn_id = writer.get_extra_info("peername")[1]

    async def next_event() -> h11.Event:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            assert isinstance(event, h11.Event)
            return event

    async def send(*events: h11.Event) -> None:
        for event in events:
            writer.write(conn.send(event) or b"")
        await writer.drain()

    try:
        while True:
            request = await next_event()
            if not isinstance(request, h11.Request):
                break
            body = hashlib.sha256()
            length = 0
            while not isinstance(event := await next_event(), h11.EndOfMessage):
                assert isinstance(event, h11.Data)
                body.update(event.data)
                length += len(event.data)
            await answer(request, send, conn_id, length, body.hexdigest())
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    except (ConnectionError, h11.ProtocolError):
        pass
    finally:
        writer.close()


async def answer(
    request: h11.Request, send: Sender, conn_id: int, length: int, digest: str
) -> None:
    url = urlsplit(request.target.decode())
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    headers = {n.decode(): v.decode() for n, v in request.headers}
    if url.path == "/slow":
        SLOW.append(url.path)
        await asyncio.sleep(float(query.get("s", "1")))
        SLOW.pop()
    if url.path == "/release":
        HOLDS[query["id"]].set()
    if url.path in ("/hold", "/stream"):
        await send(h11.Response(status_code=200, headers=[("x-backend-name", NAME)]))
        if url.path == "/hold":
            await send(h11.Data(data=b"first\n"))
            await HOLDS[query["id"]].wait()
            await send(h11.Data(data=f"{NAME}\n".encode()))
        else:
            chunk = b"x" * int(query.get("size", "1000"))
            for _ in range(int(query.get("n", "10"))):
                await send(h11.Data(data=chunk))
        await send(h11.EndOfMessage())
        return
    payload = {
        "backend": NAME,
        "method": request.method.decode(),
        "path": url.path,
        "headers": headers,
        "conn": conn_id,
        "length": length,
        "sha256": digest,
    }
    if url.path == "/inflight":
        payload["slow"] = len(SLOW)
    data = b"ok\n" if url.path == "/healthz" else json.dumps(payload).encode()
    head = [("content-length", str(len(data))), ("x-backend-name", NAME)]
    await send(h11.Response(status_code=200, headers=head), h11.Data(data=data), h11.EndOfMessage())


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[2]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
