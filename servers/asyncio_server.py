"""A coroutine per connection: asyncio.start_server runs handle() for each client.

    accept (event loop) -> task: await read, write LINE, await drain, ... until the client leaves
    a client past MAX_CONNECTIONS tasks: its task answers BUSY and closes

One thread; a coroutine gives way to the others at each await, so one that blocked
without awaiting would stall every connection.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from servers import protocol

# A coroutine is a few KB: the bound is memory, a line's worth (64 KiB) a client can make
# the server hold, 640 MB at most, and the open files it leaves for everything else.
MAX_CONNECTIONS = 10_000


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    lines = protocol.Lines()
    try:
        while data := await reader.read(protocol.RECV_BYTES):
            if replies := lines.feed(data):
                writer.write(replies)
                await writer.drain()
    except OSError as error:
        protocol.log_error(writer.get_extra_info("peername"), error)
    except asyncio.CancelledError:
        # The server is stopping. Ended rather than cancelled: Python 3.11's start_server
        # logs a traceback for every cancelled handler.
        pass
    finally:
        writer.close()


async def serve_async(
    host: str, port: int, max_connections: int, ready: Callable[[protocol.Address], None]
) -> None:
    served: set[asyncio.StreamWriter] = set()

    async def admit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(served) >= max_connections:
            writer.write(protocol.busy(len(served), max_connections))
            writer.close()
            return
        served.add(writer)
        try:
            await handle(reader, writer)
        finally:
            served.discard(writer)

    server = await asyncio.start_server(admit, host, port, backlog=protocol.BACKLOG)
    async with server:
        ready(server.sockets[0].getsockname())
        await server.serve_forever()


def serve(
    host: str, port: int, max_connections: int, ready: Callable[[protocol.Address], None]
) -> None:
    asyncio.run(serve_async(host, port, max_connections, ready))


if __name__ == "__main__":
    # At each turn of its loop, asyncio accepts as many clients as the backlog holds before
    # any is told busy.
    spare_files = protocol.SPARE_FILES + protocol.BACKLOG
    sys.exit(protocol.main("asyncio", serve, MAX_CONNECTIONS, spare_files))
