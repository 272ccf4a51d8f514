"""Flask adapter in-process against real memcached: the behaviours of Flask's own session
interface that apps rely on, with the session stored by pymsm."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import flask
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from pymsm.adapters.flask import FlaskSession, init_app
from support import session_ops
from support.servers import MEMCACHED_KINDS
from support.shared_nodes import shared_nodes

pytestmark = pytest.mark.integration


def make_app(nodes: str, **config: object) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(MSM_MEMCACHED_NODES=nodes, **config)
    init_app(app)
    session = flask.session

    @app.get("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/get/<key>")
    def get_value(key: str) -> str:
        return str(session.get(key))

    @app.get("/new")
    def is_new() -> str:
        return str(session.new)

    @app.get("/permanent")
    def make_permanent() -> str:
        session.permanent = True
        session["p"] = 1
        return "ok"

    @app.get("/append")
    def append() -> str:
        session.setdefault("items", []).append(len(session.get("items", [])))
        session.modified = True
        return str(session["items"])

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.get("/pop/<key>")
    def pop(key: str) -> str:
        return str(session.pop(key, None))

    @app.get("/nothing")
    def nothing() -> str:
        return "ok"

    @app.get("/type")
    def session_type() -> str:
        return type(session._get_current_object()).__name__

    @app.get("/flash-and-show")
    def flash_and_show() -> str:
        flask.flash("saved")  # a new visitor: the message is read in the same request
        return ",".join(flask.get_flashed_messages())

    @app.get("/logo.png")
    def logo() -> str:
        return f"{session.get('a')} {type(session._get_current_object()).__name__}"

    return app


@pytest.fixture(scope="module", params=sorted(MEMCACHED_KINDS))
def nodes(request: pytest.FixtureRequest) -> Iterator[str]:
    with shared_nodes(request.param) as setting:
        yield setting


@pytest.fixture
def client(nodes: str) -> Iterator[FlaskClient]:
    app = make_app(nodes)
    yield app.test_client()
    app.extensions["pymsm"].close()


def set_cookie_headers(response: flask.Response) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def test_values_survive_requests_under_flask_cookie_name(client: FlaskClient) -> None:
    first = client.get("/set/a/1")
    [cookie] = set_cookie_headers(first)
    assert cookie.startswith("session=") and "HttpOnly" in cookie and "Path=/" in cookie
    assert "Expires" not in cookie  # not permanent: a browser-session cookie
    assert client.get("/get/a").text == "1"
    assert client.get("/type").text == FlaskSession.__name__


def test_new_flag(client: FlaskClient) -> None:
    assert client.get("/new").text == "True"
    client.get("/set/a/1")
    assert client.get("/new").text == "False"


def test_unmodified_request_sends_no_cookie_and_vary_only_when_accessed(
    client: FlaskClient,
) -> None:
    client.get("/set/a/1")
    read = client.get("/get/a")
    assert set_cookie_headers(read) == []
    assert read.headers["Vary"] == "Cookie"
    untouched = client.get("/nothing")
    assert set_cookie_headers(untouched) == [] and "Vary" not in untouched.headers


def test_reading_an_empty_new_session_stores_nothing(client: FlaskClient) -> None:
    response = client.get("/get/a")
    assert response.text == "None" and set_cookie_headers(response) == []


def test_in_place_mutation_with_modified(client: FlaskClient) -> None:
    client.get("/append")
    assert client.get("/append").text == "[0, 1]"
    assert client.get("/get/items").text == "[0, 1]"


def test_a_new_session_emptied_by_the_request_is_not_stored(client: FlaskClient) -> None:
    """As with Flask's cookie session: an empty session leaves no cookie and no record. pymsm
    stored an empty record and sent its cookie."""
    manager = client.application.extensions["pymsm"]
    response = client.get("/flash-and-show")
    assert response.text == "saved" and set_cookie_headers(response) == []
    assert manager.stats["save_stored"] == 0
    assert client.get("/new").text == "True"


def test_pop_and_clear_end_the_session(client: FlaskClient) -> None:
    client.get("/set/a/1")
    client.get("/set/b/2")
    assert client.get("/pop/a").text == "1"
    assert client.get("/get/a").text == "None" and client.get("/get/b").text == "2"
    cleared = client.get("/clear")
    [cookie] = set_cookie_headers(cleared)
    assert cookie.startswith("session=;") and "Max-Age=0" in cookie
    assert client.get("/get/b").text == "None"


def test_permanent_session_cookie_and_refresh(nodes: str) -> None:
    app = make_app(nodes, PERMANENT_SESSION_LIFETIME=timedelta(hours=2))
    client = app.test_client()
    [cookie] = set_cookie_headers(client.get("/permanent"))
    assert "Max-Age=7200" in cookie and "Expires=" in cookie
    # SESSION_REFRESH_EACH_REQUEST (default True): a permanent session's cookie is re-sent
    assert len(set_cookie_headers(client.get("/get/p"))) == 1
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    assert set_cookie_headers(client.get("/get/p")) == []
    app.extensions["pymsm"].close()


def test_flask_cookie_settings_are_honoured(nodes: str) -> None:
    app = make_app(
        nodes,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.org",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    response = app.test_client().get("/set/a/1", base_url="https://example.org")
    [cookie] = set_cookie_headers(response)
    assert cookie.startswith("sid=")
    for part in ("Domain=example.org", "Path=/app", "Secure", "SameSite=Strict", "Partitioned"):
        assert part in cookie
    assert "HttpOnly" not in cookie
    app.extensions["pymsm"].close()


def test_msm_settings_from_app_config(nodes: str) -> None:
    app = make_app(nodes, MSM_STORAGE_KEY_PREFIX="static:flask", MSM_MAX_INACTIVE_INTERVAL="10m")
    manager = app.extensions["pymsm"]
    assert manager.config.key_prefix == "flask_"
    assert manager.config.max_inactive_interval == 600
    client = app.test_client()
    client.get("/set/a/1")
    assert client.get("/get/a").text == "1"
    manager.close()


def test_ignored_path_gets_a_null_session(client: FlaskClient) -> None:
    client.get("/set/a/1")
    response = client.get("/logo.png")
    assert response.text == "None NullSession"
    assert set_cookie_headers(response) == []


def test_an_unknown_or_malformed_cookie_starts_a_new_session(client: FlaskClient) -> None:
    client.set_cookie("session", "../../etc/passwd")
    assert client.get("/new").text == "True"
    client.set_cookie("session", "0" * 32 + "-n1")
    response = client.get("/set/a/1")
    [cookie] = set_cookie_headers(response)
    assert "0" * 32 not in cookie  # never adopts an id the store does not hold


def test_several_session_cookies_the_first_stored_one_is_used(nodes: str) -> None:
    """An old cookie for another path or domain comes first: its session is gone, and the user
    must not get a new session on every request (pymsm.cookies.MAX_COOKIES)."""
    app = make_app(nodes)
    try:
        setup = app.test_client()
        [cookie] = set_cookie_headers(setup.get("/set/a/1"))
        stored = cookie.split(";")[0].partition("=")[2]
        gone = "0" * 32 + stored[32:]
        client = app.test_client(use_cookies=False)
        response = client.get("/get/a", headers={"Cookie": f"session={gone}; session={stored}"})
        assert response.text == "1" and set_cookie_headers(response) == []
        changed = client.get("/set/a/2", headers={"Cookie": f"session={gone}; session={stored}"})
        [again] = set_cookie_headers(changed)  # Flask re-sends a modified session's cookie
        assert again.startswith(f"session={stored};")  # the same session, not a new one
        assert setup.get("/get/a").text == "2"
    finally:
        app.extensions["pymsm"].close()


# -- the same requests against Flask's own cookie session -----------------------------------

# Flask's tags keep tuples and bytes too
FLASK_VALUES = (
    session_ops.JSON_VALUES | st.tuples(st.integers(), st.text(max_size=3)) | st.binary(max_size=4)
)
FLASK_REQUESTS = session_ops.requests(
    st.tuples(st.just("set"), session_ops.KEYS, FLASK_VALUES),
    st.tuples(st.just("permanent"), st.booleans()),
)


def differential_app(nodes: str | None, **settings: object) -> flask.Flask:
    """One view that runs a request's operations on `flask.session` and returns what the
    session held when the request began: with pymsm (`nodes`) or Flask's cookie session."""
    app = flask.Flask(__name__)
    app.secret_key = "differential"
    if nodes is not None:
        app.config["MSM_MEMCACHED_NODES"] = nodes
        app.config.update(settings)
        init_app(app)
    requests: list[session_ops.Request] = []
    app.config["REQUESTS"] = requests

    def permanent(value: bool) -> None:
        flask.session.permanent = value

    @app.get("/run/<int:index>")
    def run(index: int) -> str:
        return session_ops.run(flask.session, requests[index], {"permanent": permanent})

    return app


def cookie_kind(response: flask.Response, had_cookie: bool) -> str:
    [*headers] = set_cookie_headers(response)
    if not headers:
        return "none"
    deleted = "Max-Age=0" in headers[0] or "Expires=Thu, 01 Jan 1970" in headers[0]
    if deleted:
        return "deleted" if had_cookie else "none"  # Flask deletes one it never set: no change
    # a permanent session's cookie outlives the browser: Flask gives it Expires, pymsm Max-Age too
    persistent = "Expires=" in headers[0] or "Max-Age=" in headers[0]
    return "set, persistent" if persistent else "set"


class Alternate:
    """Two app processes behind a round-robin balancer, in process: request n goes to app
    n mod 2."""

    def __init__(self, apps: list[flask.Flask]) -> None:
        self.apps, self.served = apps, 0

    def __call__(self, environ: Any, start_response: Any) -> Any:
        app = self.apps[self.served % len(self.apps)]
        self.served += 1
        return app(environ, start_response)


@given(
    requests=FLASK_REQUESTS,
    refresh=st.booleans(),
    sticky=st.booleans(),
    processes=st.sampled_from([1, 2]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_request_sequence_behaves_as_with_flasks_cookie_session(
    nodes: str, requests: list[list[tuple[Any, ...]]], refresh: bool, sticky: bool, processes: int
) -> None:
    """What each request finds in the session, whether a cookie is set or deleted, and Vary:
    the same with pymsm as with Flask's default session, for random request sequences: sticky
    or not, one app process or two taking turns (behind one route), with
    SESSION_REFRESH_EACH_REQUEST either way."""
    mode = {"MSM_STICKY": True, "MSM_ROUTE": "app1"} if sticky else {}
    flasks = differential_app(None)
    ours = [differential_app(nodes, **mode) for _ in range(processes)]
    clients = [flasks.test_client(), Client(Alternate(ours))]
    try:
        for app in (flasks, *ours):
            app.config["REQUESTS"][:] = requests
            app.config["SESSION_REFRESH_EACH_REQUEST"] = refresh
        for index in range(len(requests)):
            seen = []
            for client in clients:
                had = client.get_cookie("session") is not None
                response = client.get(f"/run/{index}")
                seen.append(
                    (response.text, cookie_kind(response, had), response.headers.get("Vary"))
                )
            assert seen[1] == seen[0], f"request {index}: {requests[index]}"
    finally:
        for app in ours:
            app.extensions["pymsm"].close()
