"""A kombu SimpleQueue as the channel of the consumer loops (local_ipc/loops.py).

    Redis list -> SimpleQueue.get -> checked -> get() -> the loop's work -> task_done()
                                                          -> settle() -> ack

get() gives the next payload, as multiprocessing.Queue.get does, and task_done()
acknowledges it, as JoinableQueue.task_done tells join(). What a broker adds is kept
here: a message that cannot be read or fails its check is refused in one log line and
the next one taken; an outage is waited out on a new connection; and the stream ends
at the sentinel, or when the parent is gone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from queue import Empty
from typing import Any

from kombu.connection import Connection
from kombu.simple import SimpleQueue

from core.transport import Session
from tasks.workloads import STOP

# How long get() waits for a message before it looks whether the parent is still there.
POLL_S = 1.0
# How long it waits while holding messages: a waiting message arrives in a round trip
# (well under a millisecond here); none by then means the queue is empty.
HELD_WAIT_S = 0.002
log = logging.getLogger(__name__)


class KombuQueue:
    """A broker queue, read as a JoinableQueue: get(), then task_done() once handled.

    Acknowledgements go `group` at a time at most, each group after settle(), where the
    pipeline records its items: never a message acknowledged before its item is
    recorded. They also go when the sentinel is handled, and when no message is
    waiting, so that none is held while the queue is empty. A consumer that dies
    holding some leaves them unacknowledged, to come back after the visibility timeout.
    """

    def __init__(
        self,
        session: Session,
        name: str,
        check: Callable[[Any], object],
        settle: Callable[[], object] = lambda: None,
        group: int = 1,
        on_connect: Callable[[], object] = lambda: None,
    ) -> None:
        """check(payload) raises ValueError on a payload this queue's consumer cannot
        handle; on_connect() runs on every connection made, before its first message."""
        self.session = session
        self.name = name
        self.check = check
        self.settle = settle
        self.group = group
        self.on_connect = on_connect
        self.parent = os.getppid()
        self.connection: Connection | None = None
        self.simple: SimpleQueue | None = None
        self.taken: Any = None
        self.ending = False
        self.held: list[Any] = []

    def get(self) -> Any:
        """The next payload, checked; STOP at the sentinel, or once the parent is gone."""
        while os.getppid() == self.parent:
            with self.session.riding_out():
                simple = self._simple()
                try:
                    message = simple.get(timeout=HELD_WAIT_S if self.held else POLL_S)
                except Empty:
                    self._acknowledge()
                    continue
                try:
                    payload = message.payload
                    if payload is not STOP:
                        self.check(payload)
                except Exception as error:
                    self._refuse(message, error)
                    continue
                self.taken, self.ending = message, payload is STOP
                return payload
        self.taken = None
        return STOP

    def task_done(self) -> None:
        """Acknowledge the message last taken, with those held, or hold it until then."""
        if self.taken is None:
            return
        self.held.append(self.taken)
        self.taken = None
        if self.ending or len(self.held) >= self.group:
            with self.session.riding_out():
                self._acknowledge()

    def refuse(self, error: Exception) -> None:
        """Refuse the message last taken, which could not be handled: one log line, and
        it is dropped, not to come back."""
        if self.taken is not None:
            with self.session.riding_out():
                self._refuse(self.taken, error)
            self.taken = None

    def _simple(self) -> SimpleQueue:
        """The SimpleQueue on the session's connection, made again on a new connection
        (after an outage): messages held on the old one can no longer be acknowledged,
        and come back."""
        connection = self.session.connection
        if self.simple is None or connection is not self.connection:
            self.held.clear()
            self.simple = connection.SimpleQueue(self.name, serializer="json", accept=["json"])
            # kombu decodes as it receives: a message it cannot decode (not JSON, not
            # allowed: pickle) is refused there, rather than raised from get().
            self.simple.consumer.on_decode_error = self._refuse
            self.connection = connection
            self.on_connect()
        return self.simple

    def _acknowledge(self) -> None:
        if self.held:
            self.settle()
            for message in self.held:
                message.ack()
            self.held.clear()

    def _refuse(self, message: Any, error: Exception) -> None:
        log.warning("refused a message on %s: %s", self.name, error)
        message.reject()
