"""I/O for one cache node: bytes in and out, sync and async twins, errors mapped to pymsm's."""

from .base import AsyncStore, Store

__all__ = ["AsyncStore", "Store"]
