"""Django configured once per test process, for the Django adapter's in-process tests."""

from __future__ import annotations

import django
from django.conf import settings


def configure() -> None:
    if not settings.configured:
        settings.configure(
            SECRET_KEY="test-only",
            SESSION_ENGINE="pymsm.adapters.django",
            INSTALLED_APPS=["django.contrib.sessions"],
            MSM_MEMCACHED_NODES="n1:127.0.0.1:1",  # replaced per test by override_settings
            ROOT_URLCONF="support.django_urls",
            MIDDLEWARE=["pymsm.adapters.django.SessionMiddleware"],
            ALLOWED_HOSTS=["*"],
            USE_TZ=True,
        )
        django.setup()
