"""Starlette endpoints and an in-process client shared by the ASGI middleware tests."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pymsm.adapters.asgi import SessionMiddleware


async def count(request: Request) -> Response:
    request.session["count"] = request.session.get("count", 0) + 1
    return JSONResponse({"count": request.session["count"]})


async def logout(request: Request) -> Response:
    request.session.clear()
    return PlainTextResponse("bye")


def client(app: SessionMiddleware) -> httpx.AsyncClient:
    """httpx over the app in-process (ASGITransport): no server, no sockets to the app."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
