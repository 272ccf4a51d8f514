"""Thin translations between a host (WSGI, ASGI, Flask, Django) and the session manager."""
