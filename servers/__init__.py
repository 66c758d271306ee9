"""One TCP server that echoes each line upper-cased, in four concurrency models, and a load client.

Kept free of imports: the gevent server must patch the standard library before anything
imports socket or threading, and importing this package comes first.
"""

# Each model is a module run as its own process: `python -m servers.thread_server --port 0`.
MODELS = {
    "process": "servers.process_server",
    "thread": "servers.thread_server",
    "gevent": "servers.gevent_server",
    "asyncio": "servers.asyncio_server",
}
HOST, PORT = "127.0.0.1", 8765
