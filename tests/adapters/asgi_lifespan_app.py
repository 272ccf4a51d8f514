"""The app tests/adapters/test_asgi_lifespan.py runs in uvicorn: FastAPI with pymsm, and an outer
ASGI layer that watches the lifespan. Both note memcached's `curr_connections` of every node into
the JSON file LIFESPAN_REPORT: the app's own shutdown handler (the stores must still be open) and
the outer layer once pymsm passed `lifespan.shutdown.complete` up (they must be closed by then,
before the process exits and the kernel would close them anyway)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from pymsm.adapters.asgi import SessionMiddleware
from support.servers import curr_connections  # PYTHONPATH=tests (the test sets it)

NODES = os.environ["MSM_MEMCACHED_NODES"]
REPORT = Path(os.environ["LIFESPAN_REPORT"])


async def counts() -> dict[str, int]:
    nodes = dict(item.split(":", 1) for item in NODES.split(","))
    return {name: await curr_connections(address) for name, address in nodes.items()}


def note(key: str, value: Any) -> None:
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[key] = value
    REPORT.write_text(json.dumps(report))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    note("startup", True)
    yield
    note("app_shutdown", await counts())


inner = FastAPI(lifespan=lifespan)
inner.add_middleware(SessionMiddleware)


@inner.get("/count")
async def count(request: Request) -> dict[str, int]:
    request.session["count"] = request.session.get("count", 0) + 1
    return {"count": request.session["count"]}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The outer layer: once pymsm passed the shutdown up, wait (up to 2 s, yielding to the loop)
    for the nodes to count the app's connections gone, and note what they count."""

    async def watching_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            expected = json.loads(os.environ["LIFESPAN_BASELINE"])
            seen = await counts()
            for _ in range(40):
                if seen == expected:
                    break
                await asyncio.sleep(0.05)
                seen = await counts()
            note("after_pymsm_shutdown", seen)
        await send(message)

    await inner(scope, receive, watching_send if scope["type"] == "lifespan" else send)
