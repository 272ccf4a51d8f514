from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def count(request: HttpRequest) -> HttpResponse:
    request.session["count"] = request.session.get("count", 0) + 1
    return JsonResponse({"count": request.session["count"], "user": request.session.get("user")})


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # what django.contrib.auth.login does: new id, same data
    request.session["user"] = request.GET.get("user", "ann")
    return HttpResponse("hi")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # what django.contrib.auth.logout does
    return HttpResponse("bye")


def static_file(request: HttpRequest) -> HttpResponse:
    return HttpResponse("body {}")  # ignored path: no session loaded or stored


urlpatterns = [
    path("count", count),
    path("login", login),
    path("logout", logout),
    path("static/app.css", static_file),
]
