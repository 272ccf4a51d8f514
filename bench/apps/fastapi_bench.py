"""The FastAPI app the framework benchmark serves; BENCH_SESSION picks the session back end:
none, cookie (Starlette's SessionMiddleware), starsessions (Redis), pymsm."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

variant = os.environ["BENCH_SESSION"]
app = FastAPI()

if variant == "cookie":
    from starlette.middleware.sessions import SessionMiddleware

    app.add_middleware(SessionMiddleware, secret_key="bench-only")
elif variant == "starsessions":
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from starsessions.stores.redis import RedisStore

    app.add_middleware(SessionAutoloadMiddleware)
    app.add_middleware(
        SessionMiddleware, store=RedisStore(os.environ["BENCH_REDIS"]), lifetime=1800
    )
elif variant == "pymsm":
    from pymsm.adapters.asgi import SessionMiddleware as PymsmMiddleware

    app.add_middleware(PymsmMiddleware)


@app.get("/count")
async def count(request: Request) -> PlainTextResponse:
    if variant == "none":
        return PlainTextResponse("0")
    request.session["count"] = request.session.get("count", 0) + 1
    return PlainTextResponse(str(request.session["count"]))
