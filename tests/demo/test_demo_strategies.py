"""The demo under other balancers and modes: ip_hash and sticky_cookie keep a client on one
node; route (sticky mode) follows the id's route and the next app takes over when that app
dies; the Redis backend; real nginx in front."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from demo_helpers import Browser, base, walk

from pymsm.demo import Demo, DemoConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def demo(request: pytest.FixtureRequest) -> Iterator[Demo]:
    """A demo with the settings the test's `demo_config` marker... or its parameters."""
    options = request.param if hasattr(request, "param") else {}
    with Demo(DemoConfig(port=0, **options)) as running:
        yield running


@pytest.mark.parametrize(
    "demo",
    [{"balancer": "ip_hash"}, {"balancer": "sticky_cookie"}],
    indirect=True,
    ids=["ip_hash", "sticky_cookie"],
)
def test_demo_sticky_strategies_keep_a_client_on_one_node(demo: Demo) -> None:
    browser = Browser(demo.url)
    answers = walk(browser, 5, 0)
    node = answers[0]["node"]
    assert {a["node"] for a in answers} == {node}
    if demo.config.strategy == "sticky_cookie":
        assert browser.cookie("MSMROUTE") == node
    demo.kill("app", node)  # the client moves once and stays
    moved = walk(browser, 4, 5)
    assert {a["node"] for a in moved} == {"app1", "app2"} - {node}


@pytest.mark.parametrize("demo", [{"mode": "sticky", "apps": 3}], indirect=True, ids=["sticky"])
def test_demo_route_follows_the_id_and_takes_over_when_its_app_dies(demo: Demo) -> None:
    assert demo.config.strategy == "route"
    browser = Browser(demo.url)
    answers = walk(browser, 4, 0)
    route = answers[0]["id_parts"]["route"]
    assert {a["node"] for a in answers} == {route}  # the id's route picks the app
    assert answers[0]["session_id"].endswith(f".{route}")
    demo.kill("app", route)
    taken = walk(browser, 4, 4)
    new_route = taken[0]["id_parts"]["route"]
    assert new_route != route and {a["node"] for a in taken} == {new_route}
    assert (
        taken[0]["session_id"]
        == f"{base(answers[0]['session_id'])}-{taken[0]['id_parts']['node']}.{new_route}"
    )
    assert browser.cookie().endswith(f".{new_route}")
    home = taken[-1]["id_parts"]["node"]
    demo.kill("memcached", home)  # the session is in the app's memory; it moves to the other node
    moved = walk(browser, 3, 8)
    assert {a["id_parts"]["node"] for a in moved} == {"n2" if home == "n1" else "n1"}
    assert {a["node"] for a in moved} == {new_route}


@pytest.mark.parametrize("demo", [{"backend": "redis"}], indirect=True, ids=["redis"])
def test_demo_on_redis(demo: Demo) -> None:
    assert demo.store_setting().startswith("redis://127.0.0.1:")
    browser = Browser(demo.url)
    answers = walk(browser, 4, 0)
    assert {a["node"] for a in answers} == {"app1", "app2"}
    assert [n["name"] for n in answers[-1]["cluster"]["memcached"]] == ["redis"]
    demo.kill("app", "app1")
    walk(browser, 3, 4)


@pytest.mark.parametrize("demo", [{"balancer": "nginx"}], indirect=True, ids=["nginx"])
def test_demo_behind_real_nginx(demo: Demo) -> None:
    browser = Browser(demo.url)
    answers = walk(browser, 4, 0)
    assert {a["proxy"] for a in answers} == {"nginx"}
    assert {a["node"] for a in answers} == {"app1", "app2"}
    home = answers[-1]["id_parts"]["node"]
    demo.kill("memcached", home)
    after = walk(browser, 4, 4)
    assert {a["id_parts"]["node"] for a in after} == {"n2" if home == "n1" else "n1"}
    demo.kill("app", "app2")
    assert {a["node"] for a in walk(browser, 4, 8)} == {"app1"}
    assert demo.state()["balancer"]["kind"] == "nginx"
