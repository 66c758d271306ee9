"""A process per connection: socketserver forks a child for each client it accepts.

    accept (parent) -> fork -> child: recv line, send LINE, ... until the client leaves -> exit
    the parent reaps children as they exit, and stops those still running when it stops

A child has its own memory and its own GIL: children run on every core, and one that
crashes takes no other client with it. Each costs a fork and a process's memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socketserver
import sys
from collections.abc import Callable

from ladder import procs
from servers import protocol


class Server(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    request_queue_size = protocol.BACKLOG
    # socketserver's default of 40 would leave the 41st client waiting for a free process.
    max_children = 1000

    def server_close(self) -> None:
        # Closing waits for every child (block_on_close), so first tell them to stop.
        for pid in self.active_children or ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        super().server_close()


def serve(host: str, port: int, ready: Callable[[protocol.Address], None]) -> None:
    # On Linux, a child is sent SIGTERM if the server dies, even by SIGKILL.
    os.register_at_fork(after_in_child=procs.die_with_parent)
    with Server((host, port), protocol.LineHandler) as server:
        ready(server.socket.getsockname())
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(protocol.main("process", serve))
