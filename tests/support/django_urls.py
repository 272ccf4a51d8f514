"""URLs for the Django middleware tests (in-process, Django's test client)."""

from __future__ import annotations

import threading

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from support import session_ops


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


# the differential test's requests (support/session_ops.py)
REQUESTS: list[session_ops.Request] = []


def run(request: HttpRequest, index: int) -> HttpResponse:
    """Run request `index` of REQUESTS; answer what the session held when it began."""
    session = request.session
    extra = {
        "flush": session.flush,
        "cycle_key": session.cycle_key,
        "set_expiry": session.set_expiry,
    }
    return HttpResponse(session_ops.run(session, REQUESTS[index], extra))


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
