"""A coroutine per connection: asyncio.start_server runs handle() for each client.

    accept (event loop) -> task: await read, write LINE, await drain, ... until the client leaves

One thread; a coroutine gives way to the others at each await, so one that blocked
without awaiting would stall every connection.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from servers import protocol


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


async def serve_async(host: str, port: int, ready: Callable[[protocol.Address], None]) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=protocol.BACKLOG)
    async with server:
        ready(server.sockets[0].getsockname())
        await server.serve_forever()


def serve(host: str, port: int, ready: Callable[[protocol.Address], None]) -> None:
    asyncio.run(serve_async(host, port, ready))


if __name__ == "__main__":
    sys.exit(protocol.main("asyncio", serve))
