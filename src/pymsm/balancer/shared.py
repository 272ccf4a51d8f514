"""State shared by the worker processes of one balancer (`workers` > 1).

The parent maps an anonymous shared memory block before forking, so every worker sees:

- one health cell per backend (admin down, passive failure deadline, last check, last error),
  read and written in place: a backend marked down or failed in one worker is skipped by all of
  them from the next request on;
- one counter slot per worker (its pid, connections, requests, and per backend: requests in
  flight, requests, failures, responses by class), which each worker publishes every
  `PUBLISH_INTERVAL` seconds and whenever it answers `state()`, so `state()` from any worker
  reports the sum over all workers (other workers' counters at most that old).

A cell is a few bytes written by one `struct.pack_into`; a torn read can at worst show a stale
value for one request, which the health model tolerates anyway (it is advisory, like nginx's).
"""

from __future__ import annotations

import mmap
import struct
from typing import TYPE_CHECKING

from pymsm.balancer.backends import Backend
from pymsm.balancer.config import BackendSpec

if TYPE_CHECKING:
    from pymsm.balancer.server import Balancer

PUBLISH_INTERVAL = 0.2
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_HEALTH = struct.Struct("<??d120s")  # admin_down, check_ok, failed_until, last_error
_WORKER = struct.Struct("<qqqq")  # pid, connections, requests, rejected
_COUNTS = struct.Struct("<qqq5q")  # active, requests, failures, responses by class


class Board:
    """The shared block for `backends` backends and `workers` workers (create before forking)."""

    def __init__(self, backends: int, workers: int) -> None:
        self.backends = backends
        self.workers = workers
        self._slot = _WORKER.size + backends * _COUNTS.size
        self._counts_at = backends * _HEALTH.size
        self.memory = mmap.mmap(-1, self._counts_at + workers * self._slot)
        for index in range(backends):
            _HEALTH.pack_into(self.memory, index * _HEALTH.size, False, True, 0.0, b"")

    # --- health cells

    def health(self, index: int) -> tuple[bool, bool, float, str]:
        admin, ok, until, error = _HEALTH.unpack_from(self.memory, index * _HEALTH.size)
        return admin, ok, until, error.rstrip(b"\0").decode("utf-8", "replace")

    def set_health(self, index: int, admin: bool, ok: bool, until: float, error: str) -> None:
        data = error.encode()[:120]
        _HEALTH.pack_into(self.memory, index * _HEALTH.size, admin, ok, until, data)

    # --- counters

    def publish(self, worker: int, pid: int, balancer: Balancer) -> None:
        """Write one worker's counters into its slot."""
        at = self._counts_at + worker * self._slot
        _WORKER.pack_into(
            self.memory, at, pid, balancer.connections, balancer.requests, balancer.rejected
        )
        at += _WORKER.size
        for backend in balancer.backends:
            responses = (backend.statuses.get(key, 0) for key in CLASSES)
            counts = (backend.active, backend.requests, backend.failures, *responses)
            _COUNTS.pack_into(self.memory, at, *counts)
            at += _COUNTS.size

    def worker(self, worker: int) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
        """(pid, connections, requests, rejected) and per backend counters of one worker."""
        at = self._counts_at + worker * self._slot
        head = _WORKER.unpack_from(self.memory, at)
        at += _WORKER.size
        counts = [
            _COUNTS.unpack_from(self.memory, at + i * _COUNTS.size) for i in range(self.backends)
        ]
        return head, counts

    def clear(self, worker: int) -> None:
        """Forget a worker's counters (it exited; a replacement starts from zero)."""
        at = self._counts_at + worker * self._slot
        self.memory[at : at + self._slot] = bytes(self._slot)


class SharedBackend(Backend):
    """A backend whose health lives in the board, so all workers agree on it; its counters
    stay per process (published to the board, summed by `Balancer.state`)."""

    def __init__(self, spec: BackendSpec, board: Board, index: int) -> None:
        # not the dataclass __init__: it would reset health that other workers may have set
        self.spec = spec
        self.board = board
        self.index = index
        self.active = 0
        self.requests = 0
        self.failures = 0
        self.statuses = {}

    def _set(
        self,
        admin: bool | None = None,
        ok: bool | None = None,
        until: float | None = None,
        error: str | None = None,
    ) -> None:
        old = self.board.health(self.index)
        self.board.set_health(
            self.index,
            old[0] if admin is None else admin,
            old[1] if ok is None else ok,
            old[2] if until is None else until,
            old[3] if error is None else error,
        )

    @property
    def admin_down(self) -> bool:
        return self.board.health(self.index)[0]

    @admin_down.setter
    def admin_down(self, value: bool) -> None:
        self._set(admin=value)

    @property
    def check_ok(self) -> bool:
        return self.board.health(self.index)[1]

    @check_ok.setter
    def check_ok(self, value: bool) -> None:
        self._set(ok=value)

    @property
    def failed_until(self) -> float:
        return self.board.health(self.index)[2]

    @failed_until.setter
    def failed_until(self, value: float) -> None:
        self._set(until=value)

    @property
    def last_error(self) -> str:
        return self.board.health(self.index)[3]

    @last_error.setter
    def last_error(self, value: str) -> None:
        self._set(error=value)

    def available(self, now: float) -> bool:
        admin, ok, until, _ = self.board.health(self.index)  # one read instead of three
        return not admin and ok and now >= until
