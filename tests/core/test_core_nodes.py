import pytest

from pymsm.core.nodes import Health, Node, NodeList
from pymsm.exceptions import ConfigError


def test_parses_msm_node_lists() -> None:
    nodes = NodeList.parse("n1:10.0.0.101:11211, n2:10.0.0.102:11212 n3:[::1]:11213", "n1")
    assert nodes.ids == ["n1", "n2", "n3"]
    assert nodes.get("n3") == Node("n3", "::1", 11213)
    assert nodes.get("n3").address == "[::1]:11213"
    assert nodes.failover == {"n1"} and nodes.primary_ids == ["n2", "n3"]
    assert nodes.after("n2") == ["n3", "n1"]


def test_single_node_without_id() -> None:
    nodes = NodeList.parse("localhost:11211")
    assert not nodes.has_ids and nodes.names == ["default"]


@pytest.mark.parametrize(
    ("text", "failover", "message"),
    [
        ("", "", "empty"),
        ("n1:host", "", "host:port"),
        ("n1:host:99999", "", "between 1 and 65535"),
        ("n1:a:1,n1:b:2", "", "used twice"),
        ("n-1:a:1,n2:b:2", "", "node id"),
        ("n1:a:1,n2:b:2", "n3", "not a node id"),
        ("n1:a:1,n2:b:2", "n1,n2", "at least one primary"),
    ],
)
def test_bad_node_lists_name_the_setting(text: str, failover: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeList.parse(text, failover)


def test_health_goes_dead_after_repeated_failures_then_probes() -> None:
    health = Health(max_failures=2, dead_timeout=10)
    assert health.available("n1", 0)
    health.failed("n1", 1)
    assert health.is_up("n1", 1) and health.describe("n1", 1) == "failed 1x"
    health.failed("n1", 2)
    assert not health.available("n1", 5) and health.describe("n1", 5).startswith("dead")
    assert health.changed_at("n1", 5) == 2
    # past the dead time one probe goes through, the others wait for its answer
    assert health.available("n1", 13)
    assert not health.available("n1", 13)
    health.failed("n1", 13)
    assert not health.available("n1", 14)
    assert health.available("n1", 24)
    health.succeeded("n1", 24)
    assert health.describe("n1", 24) == "healthy" and health.changed_at("n1", 24) == 24


def test_a_success_resets_the_failure_count() -> None:
    health = Health(max_failures=2)
    health.failed("n1", 0)
    health.succeeded("n1", 0)
    health.failed("n1", 1)
    assert health.is_up("n1", 1)


def test_changed_at_moves_to_the_end_of_the_dead_time_once_it_has_run_out() -> None:
    """A record written while a node was dead has no copy there: once the node may be back
    (its dead time ran out, nobody has seen it answer), it counts as changed from then on."""
    health = Health(max_failures=1, dead_timeout=10)
    assert health.changed_at("n1", 0) == 0
    health.failed("n1", 100)
    assert health.changed_at("n1", 105) == 100  # still dead
    assert health.changed_at("n1", 110) == 110
    assert health.last_change >= health.changed_at("n1", 110)
    assert health.available("n1", 110)  # this request takes the probe
    health.succeeded("n1", 111)
    assert health.changed_at("n1", 200) == 111
