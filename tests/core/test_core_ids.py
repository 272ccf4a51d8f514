import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymsm.core.ids import MAX_ID_LENGTH, SessionId
from pymsm.exceptions import InvalidSessionId

BASE = "2A19B1EB6D9649C9FED3E7277FDFD470"


def test_parses_msm_ids_with_node_and_route() -> None:
    sid = SessionId.parse(f"{BASE}-n2.Tomcat1")
    assert (sid.base, sid.node, sid.route) == (BASE, "n2", "Tomcat1")
    assert str(sid) == f"{BASE}-n2.Tomcat1"


@pytest.mark.parametrize("text", [BASE, f"{BASE}-n1", f"{BASE}.app1", f"{BASE}-n_1.app-1"])
def test_round_trips(text: str) -> None:
    assert str(SessionId.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        BASE.lower(),
        BASE[:-1],
        BASE + "0",
        f"{BASE}-",
        f"{BASE}-n1.",
        f"{BASE}-n 1",
        f"{BASE}-n1\r\nset x 0 0 1",
        f"{BASE}-n1\x00",
        f"{BASE}-{'n' * 33}",
        f"{BASE}-n1.{'r' * 65}",
        "x" * 300,
        f"{BASE}-n1.app1 ",
        f" {BASE}",
        f"{BASE}-n1.a.b",
    ],
)
def test_rejects_anything_off_the_pattern(text: str) -> None:
    with pytest.raises(InvalidSessionId):
        SessionId.parse(text)


def test_new_ids_are_random_upper_hex() -> None:
    ids = {SessionId.new("n1", "app1") for _ in range(100)}
    assert len(ids) == 100
    sid = ids.pop()
    assert sid.node == "n1" and sid.route == "app1"
    assert SessionId.parse(str(sid)) == sid


def test_relocate_takeover_rotate_change_one_part_each() -> None:
    sid = SessionId.parse(f"{BASE}-n1.app1")
    assert str(sid.with_node("n2")) == f"{BASE}-n2.app1"
    assert str(sid.with_route("app2")) == f"{BASE}-n1.app2"
    rotated = sid.rotated()
    assert rotated.base != sid.base and (rotated.node, rotated.route) == ("n1", "app1")


def test_constructor_validates_parts() -> None:
    with pytest.raises(InvalidSessionId):
        SessionId(BASE, node="n 1")
    with pytest.raises(InvalidSessionId):
        SessionId(BASE, route="a.b")


@given(st.text(max_size=200))
def test_parser_accepts_only_safe_keys(text: str) -> None:
    try:
        sid = SessionId.parse(text)
    except InvalidSessionId:
        return
    wire = str(sid)
    assert wire == text
    assert len(wire) <= MAX_ID_LENGTH
    assert all(33 <= ord(c) < 127 for c in wire)  # no spaces or control characters in a key


def test_parse_remembers_valid_ids_and_never_invalid_ones() -> None:
    from pymsm.core import ids

    ids._parse.cache_clear()  # earlier tests may have filled it: a full cache evicts on insert
    text = str(SessionId.new("n1", "app1"))
    before = ids._parse.cache_info().currsize
    first = SessionId.parse(text)
    assert SessionId.parse(text) is first  # the second parse is a cache hit
    assert ids._parse.cache_info().currsize == before + 1
    bad = "not-an-id\r\nset x"
    for _ in range(2):
        with pytest.raises(InvalidSessionId):
            SessionId.parse(bad)
    assert ids._parse.cache_info().currsize == before + 1
    other = str(SessionId.new("n2"))
    assert SessionId.parse(other, remember=False) == SessionId.parse(other, remember=False)
    assert ids._parse.cache_info().currsize == before + 1
