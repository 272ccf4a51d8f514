"""Random request sequences for the differential tests: pymsm against a framework's own session
(Flask's cookie session, Starlette's SessionMiddleware, Django's cache backend), the same
operations run on both, what each request finds compared request by request."""

from __future__ import annotations

import copy
from collections.abc import Callable, MutableMapping
from typing import Any

from hypothesis import strategies as st

Request = list[tuple[Any, ...]]  # (operation, *arguments), run in order on the session

KEYS = st.sampled_from(["a", "b", "c"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text("xyz", max_size=2), inner, max_size=3)
    ),
    max_leaves=6,
)
COMMON = [
    st.tuples(st.just("set"), KEYS, JSON_VALUES),
    st.tuples(st.just("setdefault"), KEYS, JSON_VALUES),
    st.tuples(st.just("get"), KEYS),
    st.tuples(st.just("pop"), KEYS),
    st.tuples(st.just("append"), KEYS),  # in place, then session.modified = True
    st.tuples(st.just("clear")),
]


def requests(*extra: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[list[Request]]:
    """One to five requests of up to four operations: the common ones and `extra`."""
    return st.lists(st.lists(st.one_of(*COMMON, *extra), max_size=4), min_size=1, max_size=5)


def canonical(value: Any) -> Any:
    """Dicts as sorted pairs: Flask's and Django's serializers sort keys, pymsm keeps them."""
    if isinstance(value, dict):
        return sorted((k, canonical(v)) for k, v in value.items())
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def run(
    session: MutableMapping[str, Any],
    request: Request,
    extra: dict[str, Callable[..., None]] | None = None,
) -> str:
    """Run `request` on `session`; return what the session held before, canonically."""
    before = repr(canonical(dict(session.items())))
    for op, *args in copy.deepcopy(request):  # values are mutated in place
        if op == "set":
            session[args[0]] = args[1]
        elif op == "setdefault":
            session.setdefault(args[0], args[1])
        elif op == "get":
            session.get(args[0])
        elif op == "pop":
            session.pop(args[0], None)
        elif op == "append":
            value = session.get(args[0])
            if isinstance(value, list):
                value.append(1)
                session.modified = True  # type: ignore[attr-defined]
        elif op == "clear":
            session.clear()
        else:
            (extra or {})[op](*args)
    return before
