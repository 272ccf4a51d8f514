"""A scripted memcached stand-in for the stores' wire tests: replies as written, byte by byte."""

from __future__ import annotations

import socket
import threading
import time

from support.servers import HOST


class ScriptedServer:
    """A one-connection-at-a-time server that answers each command line with the next reply of
    `replies`, written `piece` bytes at a time (by default one): replies reach the store in as
    many pieces as TCP cares to make of them. Records the command lines it got."""

    def __init__(self, replies: list[bytes], piece: int = 1) -> None:
        self.replies = replies
        self.piece = piece
        self.commands: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = conn.makefile("rb")
                while self.replies:
                    line = reader.readline()
                    if not line:
                        break
                    self.commands.append(line)
                    words = line.split()
                    if words[0] in (b"set", b"add", b"replace", b"cas"):
                        reader.read(int(words[4]) + 2)  # the data block
                    reply = self.replies.pop(0)
                    try:
                        for start in range(0, len(reply), self.piece):
                            conn.sendall(reply[start : start + self.piece])
                            time.sleep(0.0005)
                    except OSError:  # the store hung up mid-reply (it found it out of step)
                        break
                    if not self.replies:
                        break

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)
