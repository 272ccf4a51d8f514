"""Set-Cookie header values (RFC 6265) from the cookie settings."""

from __future__ import annotations

from pymsm.config import Config


def set_cookie(config: Config, value: str, *, delete: bool = False) -> str:
    parts = [f"{config.cookie_name}={'' if delete else value}", f"Path={config.cookie_path}"]
    if config.cookie_domain:
        parts.append(f"Domain={config.cookie_domain}")
    if delete:
        parts.append("Max-Age=0")
        parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    if config.cookie_secure:
        parts.append("Secure")
    if config.cookie_httponly:
        parts.append("HttpOnly")
    if config.cookie_samesite:
        parts.append(f"SameSite={config.cookie_samesite}")
    if config.cookie_partitioned:
        parts.append("Partitioned")
    return "; ".join(parts)


def read_cookie(header: str | None, name: str) -> str | None:
    """The first value of cookie `name` in a Cookie request header, or None."""
    if not header:
        return None
    for item in header.split(";"):
        key, sep, value = item.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None
