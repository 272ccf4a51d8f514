"""Letting go, in a forked child, of what belongs to the parent process.

A pre-forking server (gunicorn `--preload`, uWSGI without `lazy-apps`) imports the app, and
with it pymsm's manager, in a master process and forks its workers from it. A connection the
master opened (a warm-up request, a check at start-up) is then one socket shared by every
worker: their commands and replies interleave, and a worker can read the reply meant for
another, another user's session. A thread the master started (the async backup writer) does
not exist in a worker at all, so what a worker queues for it is never written.

Objects holding such things register here; in every forked child, `after_fork()` is called on
each before the child runs anything else (os.register_at_fork), and each makes its own.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class _ForkAware(Protocol):
    def after_fork(self) -> None: ...


_HOLDERS: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def forget_in_child(holder: _ForkAware) -> None:
    """Call `holder.after_fork()` in every child forked from this process from now on."""
    _HOLDERS.add(holder)


def _after_fork_in_child() -> None:
    for holder in list(_HOLDERS):
        holder.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
