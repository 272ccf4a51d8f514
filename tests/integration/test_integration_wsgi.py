"""A WSGI app on two gunicorn processes with two memcached nodes: one session across both while
the node named in its id is killed."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.servers import ServerProcess, gunicorn_app

pytestmark = pytest.mark.integration
EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
Nodes = Callable[[int], list[ServerProcess]]


def request(
    app: ServerProcess, path: str, cookie: str | None = None
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": f"MSMSESSIONID={cookie}"} if cookie else {})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read().decode()
    finally:
        conn.close()


def session_cookie(headers: dict[str, str]) -> str | None:
    header = headers.get("set-cookie")
    if header is None:
        return None
    return header.split(";")[0].split("=", 1)[1]


@pytest.fixture
def apps(memcached_nodes: Nodes) -> Iterator[tuple[list[ServerProcess], list[ServerProcess]]]:
    servers = memcached_nodes(2)
    nodes = ",".join(f"{s.name}:{s.address}" for s in servers)
    apps = [
        gunicorn_app(
            "wsgi_counter:app",
            EXAMPLES,
            {"MSM_MEMCACHED_NODES": nodes, "APP_NAME": f"app{i}", "MSM_OPERATION_TIMEOUT": "500"},
        )
        for i in (1, 2)
    ]
    for app in apps:
        app.start()
    yield apps, servers
    for app in apps:
        app.stop()


def test_one_session_across_two_processes_survives_killing_its_node(
    apps: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    (app1, app2), servers = apps
    status, headers, body = request(app1, "/api/session")
    assert status == 200
    cookie = session_cookie(headers)
    assert cookie is not None
    first = json.loads(body)
    assert first["count"] == 1 and first["node"] == "app1" and first["session_id"] == cookie
    seen = [first]
    for i, app in enumerate([app2, app1, app2]):
        _, headers, body = request(app, "/api/session", cookie)
        assert session_cookie(headers) is None  # same id, no cookie churn
        seen.append(json.loads(body))
        assert seen[-1]["count"] == i + 2
    assert {s["node"] for s in seen} == {"app1", "app2"}
    # kill the memcached node named in the id
    next(s for s in servers if s.name == first["cache_node"]).kill()
    _, headers, body = request(app2, "/api/session", cookie)
    moved = json.loads(body)
    new_cookie = session_cookie(headers)
    assert moved["count"] == 5 and moved["created"] == first["created"]
    assert new_cookie is not None and new_cookie == moved["session_id"]
    assert moved["cache_node"] != first["cache_node"] and new_cookie.endswith(
        f"-{moved['cache_node']}"
    )
    _, _, body = request(app1, "/api/session", new_cookie)
    assert json.loads(body)["count"] == 6


def test_cookie_attributes_and_vary(apps: tuple[list[ServerProcess], list[ServerProcess]]) -> None:
    (app1, _), _ = apps
    _, headers, _ = request(app1, "/")
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert headers["vary"] == "Cookie"


def test_static_paths_never_touch_the_session(
    apps: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    (app1, _), _ = apps
    status, headers, _ = request(app1, "/static/logo.png")
    assert status == 200 and "set-cookie" not in headers and "vary" not in headers


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "A" * 8000,
        "0123456789ABCDEF0123456789ABCDEF-n1",
        "0123456789ABCDEF0123456789ABCDEF-n9.x",
    ],
)
def test_malformed_forged_and_oversized_cookies_get_a_fresh_session(
    apps: tuple[list[ServerProcess], list[ServerProcess]], cookie: str
) -> None:
    (app1, _), _ = apps
    status, headers, body = request(app1, "/api/session", cookie)
    assert status == 200
    data = json.loads(body)
    assert data["count"] == 1 and data["session_id"] != cookie
    assert session_cookie(headers) == data["session_id"]


def test_several_session_cookies_the_first_stored_one_is_used(
    apps: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    """An old cookie for another path or domain comes first (browsers send the longest path,
    then the oldest, first): the stored session in the second is served, on both processes."""
    (app1, app2), _ = apps
    _, headers, _ = request(app1, "/api/session")
    stored = session_cookie(headers)
    assert stored is not None
    gone = "0" * 32 + stored[32:]
    for count, app in enumerate((app1, app2), start=2):
        status, headers, body = request(app, "/api/session", f"{gone}; MSMSESSIONID={stored}")
        assert status == 200 and json.loads(body)["count"] == count
        assert session_cookie(headers) is None


def test_login_rotates_and_logout_ends_the_session(
    apps: tuple[list[ServerProcess], list[ServerProcess]],
) -> None:
    (app1, app2), _ = apps
    _, headers, _ = request(app1, "/")
    anonymous = session_cookie(headers)
    _, headers, _ = request(app2, "/login", anonymous)
    logged_in = session_cookie(headers)
    assert logged_in and logged_in != anonymous
    _, _, body = request(app1, "/api/session", logged_in)
    assert json.loads(body)["user"] == "demo"
    _, _, body = request(app1, "/api/session", anonymous)
    assert json.loads(body)["count"] == 1  # the pre-login id is gone
    _, headers, _ = request(app2, "/logout", logged_in)
    assert "Max-Age=0" in headers["set-cookie"]
    _, _, body = request(app1, "/api/session", logged_in)
    assert json.loads(body)["session_id"] != logged_in
