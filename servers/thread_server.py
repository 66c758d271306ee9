"""A thread per connection: socketserver starts a thread for each client it accepts.

    accept (main thread) -> thread: recv line, send LINE, ... until the client leaves

Threads share one interpreter and its GIL: cheap to start, and a thread blocked on its
socket lets the others run.
"""

from __future__ import annotations

import socketserver
import sys
from collections.abc import Callable

from servers import protocol


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    request_queue_size = protocol.BACKLOG
    # Stopping the server does not wait for connected clients to leave.
    daemon_threads = True


def serve(host: str, port: int, ready: Callable[[protocol.Address], None]) -> None:
    with Server((host, port), protocol.LineHandler) as server:
        ready(server.socket.getsockname())
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(protocol.main("thread", serve))
