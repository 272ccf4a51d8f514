"""URLs for the Django middleware tests (in-process, Django's test client)."""

from __future__ import annotations

import copy
import threading
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def count(request: HttpRequest) -> HttpResponse:
    request.session["count"] = request.session.get("count", 0) + 1
    return JsonResponse({"count": request.session["count"]})


def read(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"count": request.session.get("count")})


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    request.session["user"] = "ann"
    return HttpResponse("hi")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("bye")


def fail(request: HttpRequest) -> HttpResponse:
    request.session["count"] = 1000
    return HttpResponse("boom", status=500)


def nothing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def acount(request: HttpRequest) -> HttpResponse:
    count = await request.session.aget("count", 0) + 1
    await request.session.aset("count", count)
    return JsonResponse({"count": count})


def static(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"count": request.session.get("count")})


SLOW = threading.Event()
ENTERED = threading.Event()


def slow(request: HttpRequest) -> HttpResponse:
    """Holds the session (and its lock, in locking modes) until SLOW is set."""
    request.session["slow"] = True
    ENTERED.set()
    SLOW.wait(5)
    return HttpResponse("slow")


# the differential test's requests: lists of (operation, *arguments) run on request.session
REQUESTS: list[list[tuple[Any, ...]]] = []


def canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted((k, canonical(v)) for k, v in value.items())
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def run(request: HttpRequest, index: int) -> HttpResponse:
    """Run request `index` of REQUESTS; answer what the session held when it began."""
    session = request.session
    before = repr(canonical(dict(session.items())))
    for op, *args in copy.deepcopy(REQUESTS[index]):
        if op == "set":
            session[args[0]] = args[1]
        elif op == "setdefault":
            session.setdefault(args[0], args[1])
        elif op == "get":
            session.get(args[0])
        elif op == "pop":
            session.pop(args[0], None)
        elif op == "append":
            value = session.get(args[0])
            if isinstance(value, list):
                value.append(1)
                session.modified = True
        elif op == "flush":
            session.flush()
        elif op == "cycle_key":
            session.cycle_key()
        elif op == "set_expiry":
            session.set_expiry(args[0])
        else:
            session.clear()
    return HttpResponse(before)


urlpatterns = [
    path("run/<int:index>", run),
    path("slow", slow),
    path("count", count),
    path("read", read),
    path("login", login),
    path("logout", logout),
    path("fail", fail),
    path("nothing", nothing),
    path("acount", acount),
    path("static/app.css", static),
]
