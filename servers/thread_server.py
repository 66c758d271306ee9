"""A thread per connection: socketserver starts a thread for each client it accepts.

    accept (main thread) -> thread: recv line, send LINE, ... until the client leaves
    a client past MAX_CONNECTIONS threads: the main thread answers BUSY itself and closes

Threads share one interpreter and its GIL: cheap to start, and a thread blocked on its
socket lets the others run. A thread woken must take the GIL back, and while it waits
CPython wakes it every switch interval (5 ms) to ask again, each time through the GIL's
one mutex. Thousands woken at once, as when their clients all leave together, keep that
mutex so busy that the GIL is hardly handed on, and the main thread waits among them to
accept anyone: hence the bound.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from collections.abc import Callable
from typing import Any

from servers import protocol

# Python 3.11 on 2 cores, measured: 1,000 threads whose clients leave at once keep a new
# client waiting 0.3 s; 3,000, 5 s; 15,000, two minutes.
MAX_CONNECTIONS = 1000


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    request_queue_size = protocol.BACKLOG
    # Stopping the server does not wait for connected clients to leave.
    daemon_threads = True
    max_connections = MAX_CONNECTIONS

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Threads started and not yet ended, from start() on: the main thread is the one more.
        open_now = threading.active_count() - 1
        return protocol.admitted(request, open_now, self.max_connections)


def serve(
    host: str, port: int, max_connections: int, ready: Callable[[protocol.Address], None]
) -> None:
    with Server((host, port), protocol.LineHandler) as server:
        server.max_connections = max_connections
        ready(server.socket.getsockname())
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(protocol.main("thread", serve, MAX_CONNECTIONS))
