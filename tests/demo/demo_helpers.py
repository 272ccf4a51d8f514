"""Helpers for the demo tests: a cookie-keeping HTTP client (urllib + cookiejar, like a
browser) and a walk that checks no request loses the session's data."""

from __future__ import annotations

import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import Message
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """Keeps cookies across requests, as a browser does; one per simulated user."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.timeout = timeout
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
        """(status, headers (case-insensitive), body); redirects are not followed."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base_url + path, data, timeout=self.timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def session(self) -> dict[str, Any]:
        """GET /api/session (counts a visit); fails the test on anything but 200."""
        status, headers, body = self.request("/api/session")
        assert status == 200, (status, body[:300])
        info: dict[str, Any] = json.loads(body)
        info["proxy"] = headers["X-Proxy"]
        return info

    def cookie(self, name: str = "MSMSESSIONID") -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def base(session_id: str) -> str:
    return session_id.split("-", 1)[0].split(".", 1)[0]


def walk(browser: Browser, steps: int, expect_count: int) -> list[dict[str, Any]]:
    """`steps` visits; each must answer 200 with the counter exactly one higher than the last
    (no request lost an update) and the same id base (same session). Returns the answers."""
    answers = []
    first = None
    for _ in range(steps):
        info = browser.session()
        expect_count += 1
        assert info["count"] == expect_count, (info["count"], expect_count, info["session_id"])
        first = first or base(info["session_id"])
        assert base(info["session_id"]) == first
        answers.append(info)
    return answers


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached after {timeout}s")
