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


# Several cookies of one name reach an app when they were set for different paths or domains
# (an app moved from /shop to /, cookie_domain changed from the host to .example.com): the browser
# sends them all, the longest path first, then the oldest. Like Tomcat, pymsm uses the first one
# that names a stored session; at most this many are tried, one store read each.
MAX_COOKIES = 3

Sent = str | tuple[str, ...] | None
"""What the client sent: one id, several (in the header's order), or none."""


def read_cookie(header: str | None, name: str) -> Sent:
    """The value of cookie `name` in a Cookie request header: a str, a tuple of the distinct
    values in the header's order when there are several (at most MAX_COOKIES), or None."""
    if not header:
        return None
    values = []
    for item in header.split(";"):
        key, sep, value = item.strip().partition("=")
        if sep and key == name:
            values.append(value.strip().strip('"'))
    return sent_values(values)


def sent_values(values: list[str]) -> Sent:
    """`Sent` from a cookie's values in the order the client sent them (for Werkzeug, its
    `request.cookies.getlist`): distinct and non-empty, at most MAX_COOKIES."""
    if len(values) == 1:
        return values[0] or None
    distinct = tuple(dict.fromkeys(v for v in values if v))[:MAX_COOKIES]
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else distinct
