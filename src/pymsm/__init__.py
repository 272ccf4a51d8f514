"""pymsm: shared, highly available HTTP sessions for Python web apps on memcached or Redis.

The memcached-session-manager model (session ids naming their cache node, a backup copy on the
next node, failover nodes, sticky and non-sticky modes) rebuilt for WSGI and ASGI apps.
"""

from pymsm.async_manager import AsyncSessionManager
from pymsm.config import Config
from pymsm.core.ids import SessionId
from pymsm.core.locking import readonly, writes
from pymsm.core.session import Session
from pymsm.exceptions import (
    CodecError,
    ConfigError,
    InvalidSessionId,
    ItemTooLarge,
    LockError,
    LockTimeout,
    RecordError,
    SessionError,
    SignatureError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from pymsm.manager import SessionManager

__version__ = "0.1.0"

__all__ = [
    "AsyncSessionManager",
    "CodecError",
    "Config",
    "ConfigError",
    "InvalidSessionId",
    "ItemTooLarge",
    "LockError",
    "LockTimeout",
    "RecordError",
    "Session",
    "SessionError",
    "SessionId",
    "SessionManager",
    "SignatureError",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "__version__",
    "readonly",
    "writes",
]
