"""The exceptions pymsm raises. One root, third-party errors mapped at the store boundary.

SessionError
├── ConfigError (ValueError)          a setting is invalid; the message names it and the fix
├── InvalidSessionId (ValueError)     an id does not match the strict id pattern
├── RecordError (ValueError)          a stored record cannot be decoded
│   └── SignatureError                its signature does not verify (tampered or wrong key)
├── CodecError (TypeError)            a value cannot be encoded by the configured codec
├── StoreError                        a store operation failed
│   ├── StoreUnavailable (ConnectionError)  the node refused, reset or is marked dead
│   ├── StoreTimeout (TimeoutError)         the node did not answer within the timeout
│   └── ItemTooLarge                        the server refused the item for its size
└── LockError                         a session lock could not be acquired
    └── LockTimeout (TimeoutError)    waited `lock_wait_timeout` without getting it
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "InvalidSessionId",
    "ItemTooLarge",
    "LockError",
    "LockTimeout",
    "RecordError",
    "SessionError",
    "SignatureError",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
]


class SessionError(Exception):
    """Root of every error pymsm raises."""


class ConfigError(SessionError, ValueError):
    """A setting is invalid. The message names the setting and how to fix it."""


class InvalidSessionId(SessionError, ValueError):
    """A session id does not match the strict pattern; it never reaches a store."""


class RecordError(SessionError, ValueError):
    """A stored record (or validity record) cannot be decoded."""


class SignatureError(RecordError):
    """A signed record does not verify: tampered with, or written with another key."""


class CodecError(SessionError, TypeError):
    """A session value cannot be encoded by the configured codec."""


class StoreError(SessionError):
    """A store operation failed. `node` names the node when known."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class StoreUnavailable(StoreError, ConnectionError):
    """The node refused or dropped the connection, or is marked dead."""


class StoreTimeout(StoreError, TimeoutError):
    """The node did not answer within `operation_timeout`."""


class ItemTooLarge(StoreError):
    """The server refused an item because of its size (memcached's item size limit)."""


class LockError(SessionError):
    """A session lock could not be acquired."""


class LockTimeout(LockError, TimeoutError):
    """Waited `lock_wait_timeout` for a session lock without getting it."""
