"""The background writers for `session_backup_async=True`: a bounded queue drained by one
thread (`BackupWriter`, SessionManager) or one asyncio task (`AsyncBackupWriter`,
AsyncSessionManager).

A save hands over one `Batch`: its writes, in order, and what it left for after them (the
deletes of the ids it ended or moved away from, core/sticky.Later). When the queue is full the
batch is dropped, counted and logged; the process still holds the session in memory and its next
save writes it again (the sticky load sees the store's validity stamp behind its own and forces
it), and the caller makes the batch's deletes of ended ids at once (a logout is never dropped).
`close()` drains the queue before returning. The thread's writer also drains at the
interpreter's exit (atexit) when nobody called `close()`: a gunicorn worker that exits
gracefully (a deploy, `max_requests`) runs no app code at its end, and its daemon thread would
die with the batches of its last requests, logouts included. The asyncio writer is closed by
the ASGI middleware at lifespan shutdown; batches still queued at exit without that (a server
running without lifespan) are written then on an event loop of their own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymsm import forks
from pymsm.core.ops import Add, Op, Replace
from pymsm.exceptions import StoreError

log = logging.getLogger("pymsm")
DRAIN_TIMEOUT = 10.0  # s: how long close() waits for the queue to drain


@dataclass(slots=True)
class Batch:
    """One save's work: `writes` run in order and stop at the first that fails (a later
    validity write must not claim a record write that did not happen); then `after(stored)`,
    if any (the async writer awaits it): `stored` is true when the writes to `home`, the node
    the save stores the session on, all succeeded (a failed backup copy does not count)."""

    writes: Sequence[Op]
    home: str | None = None
    after: Callable[[bool], Any] | None = None

    def stored(self, failed: Op | None) -> bool:
        """Is the session stored on `home`, `failed` being the write the batch stopped at?"""
        return self.home is not None and (
            failed is None or getattr(failed, "node", None) != self.home
        )


class _Counts:
    """What both writers share: the counters, the drop warning and the check of each write.
    A batch stops at its first write that failed (a later validity write must not claim a
    record write that did not happen)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = 0

    def _drop(self) -> bool:
        with self._lock:
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 100 == 0:
            log.warning(
                "session backup queue is full (backup_queue_size=%d): %d writes dropped so far; "
                "the sessions stay in memory and are written by their next request. Raise "
                "backup_queue_size, or check the cache nodes' latency",
                self.size,
                dropped,
            )
        return False

    def _ok(self, op: Op, result: Any) -> bool:
        """Did this write succeed? A failure is counted and logged."""
        if isinstance(result, StoreError) or (result is False and isinstance(op, Add | Replace)):
            with self._lock:
                self.failed += 1
            log.warning("session backup write to %s failed: %s", getattr(op, "node", "?"), result)
            return False
        return True

    def _wrote(self) -> None:
        with self._lock:
            self.written += 1


class BackupWriter(_Counts):
    """Runs batches of operations in order on a daemon thread. Thread-safe."""

    def __init__(self, execute: Callable[[Op], Any], size: int) -> None:
        super().__init__(size)
        self._execute = execute
        self._closed = False
        self._start()
        atexit.register(self.close)  # (see the module docstring)
        forks.forget_in_child(self)

    def _start(self) -> None:
        self._queue: queue.Queue[Batch | None] = queue.Queue(self.size)
        self._thread = threading.Thread(target=self._work, name="pymsm-backup", daemon=True)
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child (pymsm/forks.py): the parent's thread is not here, and what was
        queued at the fork is the parent's to write (written twice, an old batch could land
        after a newer one). This process gets a queue, a thread and counts of its own."""
        self._lock = threading.Lock()
        self.written = self.dropped = self.failed = 0
        if not self._closed:
            self._start()

    def submit(self, batch: Batch) -> bool:
        """Queue a batch without blocking; False (counted, logged) when the queue is full."""
        if not batch.writes and batch.after is None:
            return True
        if not self._closed:
            try:
                self._queue.put_nowait(batch)
                return True
            except queue.Full:
                pass
        return self._drop()

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

    def _write(self, batch: Batch) -> None:
        failed = next((op for op in batch.writes if not self._ok(op, self._execute(op))), None)
        if failed is None:
            self._wrote()
        if batch.after is not None:
            batch.after(batch.stored(failed))

    def flush(self) -> None:
        """Wait until every queued batch is written (or given up)."""
        self._queue.join()

    def close(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Drain the queue, then stop the thread. Later submits are dropped (and counted)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(None)  # after every queued batch
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("session backup queue not drained after %ss; unwritten sessions", timeout)


class AsyncBackupWriter(_Counts):
    """The asyncio twin: batches in order on one task of the running loop. The queue and its
    task are made on first use in a loop (and again in another loop, as the async stores
    reconnect); `close()` drains and stops them, and a later submit starts them again."""

    def __init__(self, execute: Callable[[Op], Awaitable[Any]], size: int) -> None:
        super().__init__(size)
        self._execute = execute
        self._queue: asyncio.Queue[Batch] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # what is in flight, left there if the loop stops (cancelling the task) for the exit's
        # drain to finish: a batch and the index of its write, or a batch whose `after` runs
        self._at: tuple[Batch, int] | None = None
        self._after: tuple[Batch, bool] | None = None

    def submit(self, batch: Batch) -> bool:
        """Queue a batch without waiting (call it in the loop); False (counted, logged) when
        the queue is full."""
        if not batch.writes and batch.after is None:
            return True
        try:
            self._running().put_nowait(batch)
            return True
        except asyncio.QueueFull:
            return self._drop()

    def _running(self) -> asyncio.Queue[Batch]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:
            self._queue, self._loop = asyncio.Queue(self.size), loop
            self._task = loop.create_task(self._work(self._queue), name="pymsm-backup")
            atexit.unregister(self._at_exit)
            atexit.register(self._at_exit)  # (see the module docstring)
        return self._queue

    def _at_exit(self) -> None:
        """At the interpreter's exit: the batches nobody awaited `close()` for, written on a
        loop of their own (the async stores connect again in it), at most DRAIN_TIMEOUT s."""
        batches, at, then = self._queue, self._at, self._after
        if batches is None or (batches.empty() and at is None and then is None):
            return

        async def leftovers() -> None:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                if at is not None:  # from the write in flight, made again (a set writes the
                    await self._write(*at)  # same; a new session's add finds its record)
                elif then is not None:  # the deletes in flight, made again from the start
                    await self._then(*then)
                while not batches.empty():
                    await self._write(batches.get_nowait())

        with contextlib.suppress(TimeoutError):
            asyncio.run(leftovers())
        if batches.qsize():
            log.error("session backup queue not drained at exit: %d unwritten", batches.qsize())

    async def _work(self, batches: asyncio.Queue[Batch]) -> None:
        while True:
            batch = await batches.get()
            try:
                await self._write(batch)
            except Exception:  # the writer must outlive any one bad batch
                log.exception("session backup write crashed")
            finally:
                batches.task_done()

    async def _write(self, batch: Batch, start: int = 0) -> None:
        failed = None
        for index in range(start, len(batch.writes)):
            op = batch.writes[index]
            self._at = (batch, index)
            if not self._ok(op, await self._execute(op)):
                failed = op
                break
        self._at = None
        if failed is None:
            self._wrote()
        if batch.after is not None:
            await self._then(batch, batch.stored(failed))

    async def _then(self, batch: Batch, stored: bool) -> None:
        assert batch.after is not None
        self._after = (batch, stored)
        await batch.after(stored)
        self._after = None

    async def flush(self) -> None:
        """Wait until every queued batch is written (or given up)."""
        if self._queue is not None and self._loop is asyncio.get_running_loop():
            await self._queue.join()

    async def close(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Drain the queue (at most `timeout` s), then stop the task."""
        atexit.unregister(self._at_exit)
        task, batches, loop = self._task, self._queue, self._loop
        self._task = self._queue = self._loop = None
        if task is None or batches is None:
            return
        if loop is asyncio.get_running_loop():
            try:
                async with asyncio.timeout(timeout):
                    await batches.join()
            except TimeoutError:
                pass
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if batches.qsize():
            log.error(
                "session backup queue not drained (within %ss, or its event loop is gone): "
                "%d sessions unwritten",
                timeout,
                batches.qsize(),
            )
