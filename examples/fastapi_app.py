"""FastAPI with pymsm: `request.session` as with Starlette's SessionMiddleware, stored in memcached.

Run (two memcached nodes on 11211 and 11212, two uvicorn workers sharing the sessions):

    MSM_MEMCACHED_NODES=n1:127.0.0.1:11211,n2:127.0.0.1:11212 uvicorn --app-dir examples --workers 2 fastapi_app:app
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from pymsm.adapters.asgi import SessionMiddleware

app = FastAPI()
app.add_middleware(SessionMiddleware)  # settings: keyword arguments or MSM_* environment variables


@app.get("/count")
async def count(request: Request) -> dict[str, object]:
    request.session["count"] = request.session.get("count", 0) + 1
    return {"count": request.session["count"], "user": request.session.get("user")}


@app.get("/login")
async def login(request: Request, user: str = "ann") -> PlainTextResponse:
    request.session.rotate_id()  # new id, same data: against session fixation
    request.session["user"] = user
    return PlainTextResponse("hi")


@app.get("/logout")
async def logout(request: Request) -> PlainTextResponse:
    request.session.clear()  # as with Starlette's cookie sessions: the session ends
    return PlainTextResponse("bye")


@app.get("/static/app.css")
async def static_file() -> PlainTextResponse:
    return PlainTextResponse("body {}")  # ignored path: no session loaded or stored
