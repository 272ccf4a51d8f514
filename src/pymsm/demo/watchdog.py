"""The demo's watchdog: kills the demo's nodes when the demo dies without stopping them.

`msm demo` starts each node in its own process group, so Ctrl-C in the terminal reaches only the
demo, which stops its nodes itself. A demo killed with SIGKILL (or crashing in C) cannot: its
memcached, app and balancer nodes would keep running and hold their ports. So the demo starts
this small process with a pipe as its standard input and tells it, one line each, which process
groups to watch (`+PGID`) and which are gone (`-PGID`). The kernel closes the pipe when the demo
dies, however it dies; at end of file this process SIGKILLs every group still watched. A clean
stop writes `done` first, and nothing is killed.

    python -m pymsm.demo.watchdog < pipe
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import BinaryIO


def watch(lines: BinaryIO) -> set[int]:
    """Read the demo's lines until `done` (nothing to kill) or end of file; the groups left."""
    groups: set[int] = set()
    for raw in lines:
        line = raw.strip()
        if line == b"done":
            return set()
        if line[:1] in (b"+", b"-") and line[1:].isdigit():
            pgid = int(line[1:])
            if line[:1] == b"+":
                groups.add(pgid)
            else:
                groups.discard(pgid)
    return groups


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of the pipe stops us
    for pgid in watch(sys.stdin.buffer):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
