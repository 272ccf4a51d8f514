"""The background writer for `session_backup_async=True`: a bounded queue and one thread.

A save hands over its writes as one batch of store operations. When the queue is full the batch
is dropped, counted and logged; the process still holds the session in memory and its next save
writes it again (the sticky load sees the store's validity stamp behind its own and forces it).
`close()` drains the queue before returning.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pymsm.core.ops import Add, Op, Replace
from pymsm.exceptions import StoreError

log = logging.getLogger("pymsm")


class BackupWriter:
    """Runs batches of operations in order on a daemon thread; a batch stops at its first
    write that failed (a later validity write must not claim a record write that did not
    happen). Thread-safe."""

    def __init__(self, execute: Callable[[Op], Any], size: int) -> None:
        self._execute = execute
        self._queue: queue.Queue[Sequence[Op] | None] = queue.Queue(size)
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="pymsm-backup", daemon=True)
        self._thread.start()

    def submit(self, batch: Sequence[Op]) -> bool:
        """Queue a batch without blocking; False (counted, logged) when the queue is full."""
        if not batch:
            return True
        if not self._closed:
            try:
                self._queue.put_nowait(batch)
                return True
            except queue.Full:
                pass
        with self._lock:
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 100 == 0:
            log.warning(
                "session backup queue is full (backup_queue_size=%d): %d writes dropped so far; "
                "the sessions stay in memory and are written by their next request. Raise "
                "backup_queue_size, or check the cache nodes' latency",
                self._queue.maxsize,
                dropped,
            )
        return False

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._write(batch)
            except Exception:  # the writer must outlive any one bad batch
                log.exception("session backup write crashed")
            finally:
                self._queue.task_done()

    def _write(self, batch: Sequence[Op]) -> None:
        for op in batch:
            result = self._execute(op)
            if isinstance(result, StoreError) or (
                result is False and isinstance(op, Add | Replace)
            ):
                with self._lock:
                    self.failed += 1
                log.warning(
                    "session backup write to %s failed: %s", getattr(op, "node", "?"), result
                )
                return
        with self._lock:
            self.written += 1

    def flush(self) -> None:
        """Wait until every queued batch is written (or given up)."""
        self._queue.join()

    def close(self, timeout: float = 10.0) -> None:
        """Drain the queue, then stop the thread. Later submits are dropped (and counted)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)  # after every queued batch
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("session backup queue not drained after %ss; unwritten sessions", timeout)
