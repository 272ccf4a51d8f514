"""pymsm: shared, highly available HTTP sessions for Python web apps on memcached or Redis."""

__version__ = "0.1.0"

__all__ = ["__version__"]
