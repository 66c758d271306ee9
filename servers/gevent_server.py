"""The thread server, unchanged, on greenlets: monkey.patch_all() swaps socket, threading
and select for gevent's cooperative versions before anything else imports them.

    accept (main greenlet) -> greenlet: recv line, send LINE, ... until the client leaves

One OS thread; a greenlet that waits on its socket yields to the others, as a coroutine
does at an await, but the code is the blocking code of thread_server.py.
"""

from gevent import monkey  # type: ignore[import-untyped]

monkey.patch_all()

import sys  # noqa: E402

from servers import protocol, thread_server  # noqa: E402

# A greenlet is a few KB, and one OS thread wakes for them all, so no crowd forms for the
# GIL: the bound is memory, a line's worth (64 KiB) a client can make the server hold,
# 640 MB at most, and the open files it leaves for everything else.
MAX_CONNECTIONS = 10_000

if __name__ == "__main__":
    sys.exit(protocol.main("gevent", thread_server.serve, MAX_CONNECTIONS))
