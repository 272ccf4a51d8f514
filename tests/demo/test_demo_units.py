"""The demo's pure parts: option validation and defaults, the page's rendering."""

from __future__ import annotations

import pytest

from pymsm.cli import main
from pymsm.demo import DemoConfig
from pymsm.demo.page import colour, render
from pymsm.exceptions import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "stiky"}, "--mode 'stiky': use one of non-sticky, sticky"),
        ({"balancer": "haproxy"}, "--balancer 'haproxy': use one of round_robin"),
        ({"memcached": 0}, "--memcached 0: use 1 to 9 nodes"),
        ({"failover_nodes": "n3"}, "'n3' is not one of the memcached nodes n1, n2"),
        ({"backend": "redis", "failover_nodes": "n1"}, "not --backend redis"),
    ],
)
def test_demo_config_errors_name_the_option(options, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        DemoConfig(**options)


def test_demo_config_defaults_follow_the_mode() -> None:
    assert DemoConfig().strategy == "round_robin" and not DemoConfig().routes
    sticky = DemoConfig(mode="sticky")
    assert sticky.strategy == "route" and sticky.routes
    assert DemoConfig(balancer="nginx", mode="sticky").strategy == "route"
    assert DemoConfig(balancer="route").routes
    assert DemoConfig(backend="redis", memcached=3).memcached_names == ["redis"]


def test_demo_cli_rejects_bad_options_with_status_2(capsys) -> None:
    assert main(["demo", "--apps", "12", "--port", "0"]) == 2
    assert "--apps 12: use 1 to 9 app nodes" in capsys.readouterr().err


def test_demo_page_escapes_attributes_and_highlights_the_id() -> None:
    info = {
        "node": "app2",
        "address": "127.0.0.1:9002",
        "pid": 1,
        "session_id": "A" * 32 + "-n1.app2",
        "id_parts": {"base": "A" * 32, "node": "n1", "route": "app2"},
        "is_new": False,
        "created": 1.5e9,
        "last_accessed": 1.5e9 + 3,
        "count": 7,
        "attributes": {"<script>": "<b>x</b>"},
        "cluster": None,
    }
    page = render(info, "killed <n1>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert '-<span class="node" title="memcached node">n1</span>' in page
    assert '.<span class="route" title="route (app node)">app2</span>' in page
    assert "killed &lt;n1&gt;" in page and "not started by `msm demo`" in page
    assert f"background:{colour('app2')}" in page and colour("app1") != colour("app2")
