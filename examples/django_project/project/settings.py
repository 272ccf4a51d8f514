"""Minimal Django settings with pymsm sessions. See examples/django_project/project/wsgi.py."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.sessions"]
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
USE_TZ = True

SESSION_ENGINE = "pymsm.adapters.django"
MIDDLEWARE = ["pymsm.adapters.django.SessionMiddleware"]
MSM_MEMCACHED_NODES = os.environ.get("MSM_MEMCACHED_NODES", "n1:127.0.0.1:11211,n2:127.0.0.1:11212")
