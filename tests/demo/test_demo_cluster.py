"""The default demo (non-sticky, round robin, two memcached nodes, two apps, the embedded
balancer), started once in-process for this module; every test leaves all nodes running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from demo_helpers import Browser, base, walk

from pymsm.demo import Demo, DemoConfig
from pymsm.demo.control import call, find

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    with Demo(DemoConfig(port=0)) as running:
        yield running


@pytest.fixture(autouse=True)
def _all_up(demo: Demo) -> Iterator[None]:
    yield
    for node in [*demo.stores, *demo.apps]:
        demo.start_node(node.kind, node.name)


def test_demo_round_robin_alternates_nodes_and_keeps_the_session(demo: Demo) -> None:
    browser = Browser(demo.url)
    answers = walk(browser, 6, 0)
    nodes = [a["node"] for a in answers]
    assert nodes[0] != nodes[1] and nodes[::2] == nodes[:1] * 3 and set(nodes) == {"app1", "app2"}
    assert len({a["session_id"] for a in answers}) == 1
    first = answers[0]
    assert first["id_parts"]["node"] in ("n1", "n2") and first["id_parts"]["route"] is None
    assert answers[-1]["created"] == first["created"]
    assert answers[-1]["last_accessed"] >= first["created"]
    assert answers[0]["proxy"] == "pymsm-balancer"
    assert browser.cookie() == first["session_id"]


def test_demo_kill_the_memcached_node_in_the_id_then_an_app_loses_nothing(demo: Demo) -> None:
    browser = Browser(demo.url)
    first = walk(browser, 2, 0)[-1]
    home = first["id_parts"]["node"]
    assert "killed memcached" in demo.kill("memcached", home)
    after_cache = walk(browser, 4, 2)
    assert {a["id_parts"]["node"] for a in after_cache} == {"n2" if home == "n1" else "n1"}
    assert base(after_cache[0]["session_id"]) == base(first["session_id"])
    demo.kill("app", after_cache[-1]["node"])
    after_app = walk(browser, 4, 6)
    assert {a["node"] for a in after_app} == {"app1", "app2"} - {after_cache[-1]["node"]}
    state = demo.state()  # the apps' copy may be up to CLUSTER_TTL old
    assert [n["up"] for n in state["memcached"] if n["name"] == home] == [False]


def test_demo_restarted_nodes_come_back(demo: Demo) -> None:
    demo.kill("app", "app1")
    demo.kill("memcached", "n2")
    browser = Browser(demo.url)
    walk(browser, 2, 0)
    assert demo.start_node("app", "app1") == f"started app app1 on {demo.apps[0].address}"
    demo.start_node("memcached", "n2")
    nodes = {a["node"] for a in walk(browser, 4, 2)}
    assert nodes == {"app1", "app2"}
    assert all(n["up"] for n in demo.state()["memcached"])


def test_demo_page_shows_node_id_parts_counter_and_cluster(demo: Demo) -> None:
    browser = Browser(demo.url)
    status, headers, body = browser.request("/")
    page = body.decode()
    sid = browser.cookie()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert sid is not None
    id_base, node = sid.split("-")
    assert (
        f'<span class="base">{id_base}</span>-<span class="node" title="memcached node">{node}</span>'
        in page
    )
    assert '<span class="count" id="count">1</span>' in page
    info = browser.session()
    other = "app2" if info["node"] == "app1" else "app1"  # round robin: the page was the other
    assert f'<h1 id="node">{other}</h1>' in page and info["count"] == 2
    for name in ("n1", "n2", "app1", "app2"):
        assert f'id="kill-{"memcached" if name[0] == "n" else "app"}-{name}"' in page


def test_demo_attributes_set_and_remove_through_forms(demo: Demo) -> None:
    browser = Browser(demo.url)
    status, headers, _ = browser.request(
        "/attributes", {"action": "set", "name": "colour", "value": "red"}
    )
    assert status == 303 and headers["Location"].startswith("/?message=set")
    browser.request("/attributes", {"action": "set", "name": "size", "value": "XL"})
    assert browser.session()["attributes"] == {"colour": "red", "size": "XL"}
    browser.request("/attributes", {"action": "remove", "name": "colour"})
    assert browser.session()["attributes"] == {"size": "XL"}
    browser.request("/invalidate", {})
    fresh = browser.session()
    assert fresh["attributes"] == {} and fresh["count"] == 1


def test_demo_control_api_and_page_buttons(demo: Demo) -> None:
    url = find(demo.port)
    assert url == demo.control.url
    answer = call(url, "POST", "/kill/memcached/n9")
    assert answer == {"ok": False, "message": "no memcached node 'n9': the nodes are n1, n2"}
    browser = Browser(demo.url)
    status, headers, _ = browser.request(
        "/control", {"action": "kill", "kind": "memcached", "name": "n1"}
    )
    assert status == 303 and "killed%20memcached%20n1" in headers["Location"]
    assert call(url)["memcached"][0]["status"] == "killed"
    assert browser.session()["id_parts"]["node"] == "n2"
