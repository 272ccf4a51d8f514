"""Backend state: health (admin, passive, active) and counters. Pure: the clock is passed in.

A backend is available when all three agree:

- admin: not marked down by `Balancer.mark_down` (stays down until `mark_up`);
- passive: no failed connection in the last `fail_timeout` s (nginx's `max_fails=1`);
- active: the last health check, when checks are on, answered 2xx/3xx.

A successful active check also clears a passive failure, so a restarted backend is back as soon
as it answers its health path rather than after `fail_timeout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymsm.balancer.config import BackendSpec


@dataclass
class Backend:
    spec: BackendSpec
    admin_down: bool = False
    failed_until: float = 0.0
    check_ok: bool = True
    last_error: str = ""
    active: int = 0
    requests: int = 0
    failures: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def available(self, now: float) -> bool:
        return not self.admin_down and self.check_ok and now >= self.failed_until

    def fail(self, now: float, fail_timeout: float, reason: str) -> None:
        """A connection failed (refused, reset, timed out): skip this backend for a while."""
        self.failures += 1
        self.failed_until = now + fail_timeout
        self.last_error = reason

    def checked(self, ok: bool, reason: str = "") -> None:
        self.check_ok = ok
        if ok:
            self.failed_until = 0.0
        else:
            self.last_error = reason

    def count_response(self, status: int) -> None:
        key = f"{status // 100}xx"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def state(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.spec.address,
            "up": self.available(now),
            "reason": self._reason(now),
            "active": self.active,
            "requests": self.requests,
            "failures": self.failures,
            "responses": dict(self.statuses),
            "last_error": self.last_error,
        }

    def _reason(self, now: float) -> str:
        if self.admin_down:
            return "marked down"
        if not self.check_ok:
            return "health check failed"
        if now < self.failed_until:
            return f"connection failed, retry in {self.failed_until - now:.1f}s"
        return ""
