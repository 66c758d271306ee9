"""A process per connection: socketserver forks a child for each client it accepts.

    accept (parent) -> fork -> child: recv line, send LINE, ... until the client leaves -> exit
    the parent reaps children as they exit, and stops those still running when it stops
    a client past MAX_CONNECTIONS children: the parent answers BUSY itself and closes

A child has its own memory and its own GIL: children run on every core, and one that
crashes takes no other client with it. Each costs a fork and a process's memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import sys
from collections.abc import Callable
from typing import Any

from core import procs
from servers import protocol

# A child costs about 1.5 MB of memory of its own, idle (measured), and up to a line's
# worth more: 512 stay under 1 GB. K = 500, the most `ladder load --compare` opens, fits.
MAX_CONNECTIONS = 512


class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = protocol.BACKLOG
    max_connections = MAX_CONNECTIONS

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.collect_children()  # first, so that a child that has just exited frees its place
        if left_already(request):
            # After a burst, the backlog holds clients that have left, as many as it has
            # room for: a fork each (about 3 ms) would keep the next client waiting seconds.
            return False
        return protocol.admitted(request, len(self.active_children or ()), self.max_connections)

    def collect_children(self, *, blocking: bool = False) -> None:
        # socketserver's own asks every live child in turn, 512 calls per accept, and past
        # its max_children stops accepting until one exits, which an idle client's never
        # does. waitpid(-1) reaps whichever have exited, one call each: the server has no
        # other children.
        while self.active_children:
            try:
                pid, _ = os.waitpid(-1, 0 if blocking else os.WNOHANG)
            except ChildProcessError:
                self.active_children.clear()
                return
            if pid == 0:
                return
            self.active_children.discard(pid)

    def server_close(self) -> None:
        # Closing waits for every child (block_on_close), so first tell them to stop.
        for pid in self.active_children or ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        super().server_close()


def left_already(conn: socket.socket) -> bool:
    """Whether the client has closed its end, peeking without waiting."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def serve(
    host: str, port: int, max_connections: int, ready: Callable[[protocol.Address], None]
) -> None:
    # On Linux, a child is sent SIGTERM if the server dies, even by SIGKILL.
    os.register_at_fork(after_in_child=procs.die_with_parent)
    with Server((host, port), protocol.LineHandler) as server:
        server.max_connections = max_connections
        ready(server.socket.getsockname())
        server.serve_forever()


if __name__ == "__main__":
    # The children hold the clients' sockets; the parent, only the one it is accepting.
    sys.exit(protocol.main("process", serve, MAX_CONNECTIONS, spare_files=None))
