"""The thread server, unchanged, on greenlets: monkey.patch_all() swaps socket, threading
and select for gevent's cooperative versions before anything else imports them.

    accept (main greenlet) -> greenlet: recv line, send LINE, ... until the client leaves

One OS thread; a greenlet that waits on its socket yields to the others, as a coroutine
does at an await, but the code is the blocking code of thread_server.py.
"""

from gevent import monkey  # type: ignore[import-untyped]

monkey.patch_all()

import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

import gevent  # noqa: E402

from servers import protocol, thread_server  # noqa: E402

# A greenlet is a few KB, and one OS thread wakes for them all, so no crowd forms for the
# GIL: the bound is memory, a line's worth (64 KiB) a client can make the server hold,
# 640 MB at most, and the open files it leaves for everything else.
MAX_CONNECTIONS = 10_000


def serve(
    host: str, port: int, max_connections: int, ready: Callable[[protocol.Address], None]
) -> None:
    # A signal's Python handler runs in whichever greenlet is running, and what it raises
    # in a client's ends that greenlet only: threading catches what its threads raise.
    # gevent's handler runs in a greenlet of its own, which throws into the main one.
    main = gevent.getcurrent()
    stops = [
        gevent.signal_handler(s, main.throw, protocol.Stopped(s)) for s in protocol.EXIT_BY_SIGNAL
    ]
    try:
        thread_server.serve(host, port, max_connections, ready)
    finally:
        for stop in stops:
            stop.cancel()


if __name__ == "__main__":
    sys.exit(protocol.main("gevent", serve, MAX_CONNECTIONS))
