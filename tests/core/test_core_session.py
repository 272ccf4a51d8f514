from pymsm.core.ids import SessionId
from pymsm.core.session import Session


def make() -> Session:
    return Session(SessionId.new("n1"), {"name": "ann", "cart": [1]}, is_new=False)


def test_reads_mark_accessed_not_modified() -> None:
    session = make()
    assert not session.accessed
    assert session["name"] == "ann" and session.get("missing") is None
    assert session.accessed and not session.modified and not session.mutable_read


def test_handing_out_a_mutable_value_is_noted() -> None:
    session = make()
    session["cart"].append(2)
    assert session.mutable_read and not session.modified


def test_writes_and_deletes_are_tracked_per_key() -> None:
    session = make()
    session["a"] = 1
    del session["name"]
    session.pop("cart")
    assert session.modified
    assert session.changes == (frozenset({"a"}), frozenset({"name", "cart"}))
    session.mark_saved()
    assert not session.modified and session.changes == (frozenset(), frozenset())


def test_invalidate_empties_and_retires_the_id() -> None:
    session = make()
    old = session.sid
    session.invalidate()
    assert session.retired == [old]
    assert session.sid != old and session.is_new and len(session) == 0 and not session.modified


def test_rotate_keeps_data_under_a_new_base() -> None:
    session = make()
    old = session.sid
    session.rotate_id()
    assert session.sid.base != old.base and session.sid.node == old.node
    assert session["name"] == "ann" and session.retired == [old] and session.modified


def test_lazy_sessions_load_on_first_use_only() -> None:
    calls = []

    def loader(session: Session) -> None:
        calls.append(1)
        session._fill(
            SessionId.new(),
            {"x": 1},
            is_new=False,
            created=1.0,
            last_accessed=1.0,
            this_accessed=2.0,
            max_inactive_interval=60,
        )

    session = Session.lazy(loader)
    assert not session.loaded and not calls
    assert session["x"] == 1 and session.created == 1.0 and calls == [1]
    assert session.max_inactive_interval == 60 and calls == [1]


def test_copy_is_a_plain_dict_as_with_flask_and_starlette() -> None:
    session = Session(SessionId.new("n1"), {"a": 1, "b": "x"}, is_new=False)
    copied = session.copy()
    assert copied == {"a": 1, "b": "x"} and type(copied) is dict
    assert session.accessed and not session.modified and not session.mutable_read
    copied["a"] = 2
    assert session["a"] == 1  # a copy, not a view
    nested = Session(SessionId.new("n1"), {"cart": [1]}, is_new=False)
    nested.copy()["cart"].append(2)
    assert nested.mutable_read  # the shared list is checked for in-place changes at save
