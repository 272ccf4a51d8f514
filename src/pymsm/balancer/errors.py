"""The balancer's own responses: short plain-text errors that say what failed and what to do."""

from __future__ import annotations

from http import HTTPStatus

import h11


class Abort(Exception):
    """Close the client connection now: it went away, or a response broke off mid-body."""


def error_response(
    status: int, detail: str, server: str, headers: list[tuple[bytes, bytes]]
) -> tuple[h11.Response, bytes]:
    reason = HTTPStatus(status).phrase
    body = f"{status} {reason}: {detail}\n".encode()
    head = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-proxy", server.encode()),
        *headers,
    ]
    return h11.Response(status_code=status, headers=head, reason=reason.encode()), body
