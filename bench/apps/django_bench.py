"""The Django app the framework benchmark serves (settings, URLs and WSGI in one module);
BENCH_SESSION picks the session back end: none, db (Django's default, SQLite), cache (Django's
cache backend on memcached), pymsm."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

variant = os.environ["BENCH_SESSION"]
middleware = {
    "none": [],
    "db": ["django.contrib.sessions.middleware.SessionMiddleware"],
    "cache": ["django.contrib.sessions.middleware.SessionMiddleware"],
    "pymsm": ["pymsm.adapters.django.SessionMiddleware"],
}[variant]
engine = {
    "none": "django.contrib.sessions.backends.db",
    "db": "django.contrib.sessions.backends.db",
    "cache": "django.contrib.sessions.backends.cache",
    "pymsm": "pymsm.adapters.django",
}[variant]

settings.configure(
    SECRET_KEY="bench-only",
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.sessions"],
    MIDDLEWARE=middleware,
    SESSION_ENGINE=engine,
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE", ":memory:"),
        }
    },
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": os.environ.get("BENCH_MEMCACHED", "127.0.0.1:11211"),
            "OPTIONS": {"no_delay": True},
        }
    },
    MSM_MEMCACHED_NODES=os.environ.get("MSM_MEMCACHED_NODES", ""),
    USE_TZ=True,
)


def count(request: HttpRequest) -> HttpResponse:
    if variant == "none":
        return HttpResponse("0")
    request.session["count"] = request.session.get("count", 0) + 1
    return HttpResponse(str(request.session["count"]))


urlpatterns = [path("count", count)]
application = get_wsgi_application()
