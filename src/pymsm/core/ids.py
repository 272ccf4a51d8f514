"""Session ids: `<base>-<nodeId>[.<route>]`, as MSM and Tomcat write them.

`base` is 32 upper-case hex characters (128 bits from `secrets`). The node id names the cache node
holding the session; the route names the app node a sticky load balancer should pick. Ids are
checked against a strict pattern before any store key is built from them (no key injection).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace
from functools import lru_cache

from pymsm.exceptions import InvalidSessionId

BASE_LENGTH = 32
MAX_NODE_ID_LENGTH = 32
MAX_ROUTE_LENGTH = 64
MAX_ID_LENGTH = BASE_LENGTH + 1 + MAX_NODE_ID_LENGTH + 1 + MAX_ROUTE_LENGTH

_BASE_PATTERN = re.compile(r"[0-9A-F]{32}", re.ASCII)
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9_]{1,32}")
ROUTE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_PATTERN = re.compile(
    r"([0-9A-F]{32})(?:-([A-Za-z0-9_]{1,32}))?(?:\.([A-Za-z0-9_-]{1,64}))?", re.ASCII
)


def new_base() -> str:
    return secrets.token_hex(BASE_LENGTH // 2).upper()


@dataclass(frozen=True, slots=True)
class SessionId:
    """A parsed, valid session id. `str(sid)` gives the wire form."""

    base: str
    node: str | None = None
    route: str | None = None
    _text: str = field(init=False, repr=False, compare=False)  # the wire form, built once

    @classmethod
    def new(cls, node: str | None = None, route: str | None = None) -> SessionId:
        return cls(new_base(), node, route)

    @classmethod
    def parse(cls, text: str, *, remember: bool = True) -> SessionId:
        """Parse a client-sent id. Raises InvalidSessionId for anything off the strict pattern.
        Valid ids are remembered (a bounded cache); bulk parsing, such as a scan of a node's
        keys, passes `remember=False` so it does not push out the ids of live requests."""
        if not isinstance(text, str) or len(text) > MAX_ID_LENGTH:
            raise InvalidSessionId("session id is not a string of at most 130 characters")
        if cls is SessionId and remember:
            return _parse(text)
        return _parse_uncached(cls, text)

    def __post_init__(self) -> None:
        if not _BASE_PATTERN.fullmatch(self.base):
            raise InvalidSessionId(
                f"session id base must be 32 upper-case hex digits: {self.base!r}"
            )
        if self.node is not None and not NODE_ID_PATTERN.fullmatch(self.node):
            raise InvalidSessionId(f"invalid node id {self.node!r}")
        if self.route is not None and not ROUTE_PATTERN.fullmatch(self.route):
            raise InvalidSessionId(f"invalid route {self.route!r}")
        text = self.base
        if self.node is not None:
            text += "-" + self.node
        if self.route is not None:
            text += "." + self.route
        object.__setattr__(self, "_text", text)  # frozen: set once, here

    def __str__(self) -> str:
        return self._text

    def with_node(self, node: str | None) -> SessionId:
        """Relocation: the session moved to another cache node."""
        return replace(self, node=node)

    def with_route(self, route: str | None) -> SessionId:
        """Takeover: another app node serves the session now."""
        return replace(self, route=route)

    def rotated(self) -> SessionId:
        """A new base with the same node and route (rotate on login against fixation)."""
        return replace(self, base=new_base())


def _parse_uncached(cls: type[SessionId], text: str) -> SessionId:
    match = _ID_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidSessionId(f"malformed session id {text[:40]!r}")
    return cls(match[1], match[2], match[3])


@lru_cache(maxsize=4096)
def _parse(text: str) -> SessionId:
    """Ids are immutable and each user sends theirs on every request: parse it once. Invalid
    ids raise and are not cached; a flood of distinct ids only cycles the bounded cache."""
    return _parse_uncached(SessionId, text)
