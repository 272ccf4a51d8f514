"""Session: the MutableMapping the app sees, with the bookkeeping the flows need.

Tracks whether the app read it (`accessed`, for `Vary: Cookie`), changed it (`modified`, the keys
set and deleted, for per-key merge), and whether it handed out a mutable value (a nested dict or
list may be changed in place without `__setitem__`; the save compares encodings then).

A session may be lazy: `Session.lazy(loader)` calls `loader(session)` on first use, which fills it
through `_fill`. The loader does the I/O; this module does none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Self

from .ids import SessionId
from .records import Record

_IMMUTABLE = (str, int, float, bool, type(None), bytes, frozenset)


class Session(MutableMapping[str, Any]):
    """A user's session. Times are seconds since the epoch (floats), as `time.time()` gives."""

    __slots__ = (
        "_changed",
        "_created",
        "_data",
        "_deleted",
        "_last_accessed",
        "_loader",
        "_max_inactive",
        "_sid",
        "_this_accessed",
        "accessed",
        "cas_token",
        "invalidated",
        "is_new",
        "load_status",
        "lock",
        "modified",
        "mutable_read",
        "record",
        "replaces",
        "retired",
        "sent_id",
    )

    def __init__(
        self,
        sid: SessionId | None = None,
        data: dict[str, Any] | None = None,
        *,
        is_new: bool = True,
        created: float = 0.0,
        last_accessed: float = 0.0,
        max_inactive_interval: int = 1800,
    ) -> None:
        self._sid = sid
        self._data: dict[str, Any] = {} if data is None else data
        self.is_new = is_new
        self._created = created
        self._last_accessed = last_accessed
        self._this_accessed = last_accessed
        self._max_inactive = max_inactive_interval
        self._loader: Callable[[Session], None] | None = None
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self.accessed = False
        self.modified = False
        self.mutable_read = False
        self.invalidated = False
        self.record: Record | None = None  # the stored record as loaded (None when new)
        self.retired: list[SessionId] = []  # ids whose keys the save deletes
        # the id that still holds this session while its new one is not stored yet (a sticky
        # takeover or move): deleted once the new id is stored, retired with it (below)
        self.replaces: SessionId | None = None
        self.load_status = "new"
        self.cas_token: Any = None  # the record's CAS token as loaded (optimistic writes)
        self.lock: Any = None  # the manager's per-request lock state (pymsm.locks.Guard)
        # when the client sent several cookies: the one this session was loaded from (the last
        # one tried if none named a stored session), for the cookie decision (pymsm.cookies)
        self.sent_id: str | None = None

    @classmethod
    def lazy(cls, loader: Callable[[Session], None]) -> Self:
        session = cls()
        session._loader = loader
        return session

    # -- loading ---------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loader is None

    def _ensure(self) -> None:
        loader = self._loader
        if loader is not None:
            self._loader = None
            try:
                loader(self)
            except BaseException:
                self._loader = loader  # not loaded (e.g. LockTimeout): stay lazy, not half-filled
                raise

    def _fill(
        self,
        sid: SessionId,
        data: dict[str, Any],
        *,
        is_new: bool,
        created: float,
        last_accessed: float,
        this_accessed: float,
        max_inactive_interval: int,
        record: Record | None = None,
        status: str = "new",
    ) -> None:
        self._sid, self._data, self.is_new = sid, data, is_new
        self._created, self._last_accessed, self._this_accessed = (
            created,
            last_accessed,
            this_accessed,
        )
        self._max_inactive, self.record, self.load_status = max_inactive_interval, record, status

    # -- the public API ---------------------------------------------------------------------

    @property
    def sid(self) -> SessionId:
        self._ensure()
        assert self._sid is not None, "a session has an id once loaded"
        return self._sid

    @property
    def id(self) -> str:
        return str(self.sid)

    @property
    def created(self) -> float:
        self._ensure()
        return self._created

    @property
    def last_accessed(self) -> float:
        """When the previous request used this session (Tomcat's lastAccessedTime)."""
        self._ensure()
        return self._last_accessed

    @property
    def this_accessed(self) -> float:
        self._ensure()
        return self._this_accessed

    @property
    def max_inactive_interval(self) -> int:
        self._ensure()
        return self._max_inactive

    @max_inactive_interval.setter
    def max_inactive_interval(self, seconds: int) -> None:
        self._ensure()
        self._max_inactive = int(seconds)
        self.modified = True

    def invalidate(self) -> None:
        """End this session (logout): its stored copies are deleted when the request ends.

        The object becomes a new, empty session; it is stored under a fresh id only if the
        request writes to it afterwards.
        """
        self._ensure()
        assert self._sid is not None
        self._retire()
        self._sid = self._sid.rotated()
        self._data = {}
        self._changed.clear()
        self._deleted.clear()
        self.is_new = True
        self.invalidated = True
        self.modified = False
        self.record = None

    def rotate_id(self) -> None:
        """Give the session a new id, keeping its data (call on login against fixation)."""
        self._ensure()
        assert self._sid is not None
        self._retire()
        self._sid = self._sid.rotated()
        self.modified = True

    def _retire(self) -> None:
        """The current id ends (logout, rotation), and so does the one it replaces: a
        session taken over and rotated (or logged out) in one request must not stay loadable
        under the id it had before."""
        if not self.is_new:
            assert self._sid is not None
            self.retired.append(self._sid)
        if self.replaces is not None:
            self.retired.append(self.replaces)
            self.replaces = None

    def relocate(self, sid: SessionId) -> None:
        """The flows moved the session (new node id or route); the old keys are gone already."""
        self._sid = sid

    def mark_saved(self) -> None:
        """The store holds what the app sees now: start tracking changes afresh."""
        self.modified = self.mutable_read = False
        self._changed.clear()
        self._deleted.clear()

    def replace_data(self, data: dict[str, Any]) -> None:
        """The flows merged this request's changes onto a fresher copy: show the app that."""
        self._data = data

    @property
    def changes(self) -> tuple[frozenset[str], frozenset[str]]:
        """(keys set, keys deleted) by this request, for merging onto a fresher copy."""
        return frozenset(self._changed), frozenset(self._deleted)

    @property
    def data(self) -> dict[str, Any]:
        """The attributes, without marking the session accessed (for the flows)."""
        self._ensure()
        return self._data

    # -- MutableMapping ---------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._ensure()
        self.accessed = True
        value = self._data[key]
        if not isinstance(value, _IMMUTABLE):
            self.mutable_read = True
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._ensure()
        self.accessed = self.modified = True
        self._data[key] = value
        self._changed.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        self._ensure()
        self.accessed = True
        del self._data[key]
        self.modified = True
        self._deleted.add(key)
        self._changed.discard(key)

    def __iter__(self) -> Iterator[str]:
        self._ensure()
        self.accessed = True
        return iter(self._data)

    def __len__(self) -> int:
        self._ensure()
        self.accessed = True
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._ensure()
        self.accessed = True
        return key in self._data

    def copy(self) -> dict[str, Any]:
        """A shallow copy as a plain dict, like `dict.copy`: Flask's and Starlette's sessions
        are dicts, and apps call it. Nested values are shared, so they are checked for
        in-place changes as after any read of them."""
        self._ensure()
        self.accessed = True
        if not all(isinstance(v, _IMMUTABLE) for v in self._data.values()):
            self.mutable_read = True
        return dict(self._data)

    def clear(self) -> None:
        self._ensure()
        self.accessed = True
        if self._data:
            self._deleted.update(self._data)
            self._changed.clear()
            self._data.clear()
            self.modified = True

    def __repr__(self) -> str:
        if self._loader is not None:
            return "<Session (not loaded)>"
        return f"<Session {self._sid} {'new ' if self.is_new else ''}{len(self._data)} keys>"
