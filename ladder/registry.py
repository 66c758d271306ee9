"""The rungs by name: the CLI's choices, the demo's matrix and the tests all read them.

A rung is known here by what the CLI shows of it, and its class is imported only when a
run asks for it: the broker rungs import celery, kombu and redis, which `ladder rungs`,
a local run and the local rungs' children have no use for.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from core.errors import BadInput
from core.rung import Channel, Rung


@dataclass(frozen=True)
class RungInfo:
    """A rung before it is imported: its name, where its class is, what it teaches."""

    name: str
    where: str  # "module:Class"
    channel: Channel
    teaches: str
    # Whether its pipeline can move job.batch items per message (--batch).
    batches: bool = False

    def load(self) -> type[Rung]:
        module, _, name = self.where.partition(":")
        rung: type[Rung] = getattr(importlib.import_module(module), name)
        return rung


INFO: dict[str, RungInfo] = {
    info.name: info
    for info in (
        RungInfo(
            "serial",
            "local_ipc.serial:SerialRung",
            "local",
            "one loop, no concurrency: the baseline every speedup is measured against",
        ),
        RungInfo(
            "threads",
            "local_ipc.threads:ThreadsRung",
            "local",
            "shared memory and the GIL: no gain on CPU-bound work, a real one on I/O",
            batches=True,
        ),
        RungInfo(
            "processes",
            "local_ipc.processes:ProcessesRung",
            "local",
            "isolation: one interpreter per process, items pickled through pipes, sentinels, join",
            batches=True,
        ),
        RungInfo(
            "thread-pool",
            "local_ipc.thread_pool:ThreadPoolRung",
            "local",
            "concurrent.futures with threads: submit, futures, as_completed, done callbacks",
        ),
        RungInfo(
            "process-pool",
            "local_ipc.process_pool:ProcessPoolRung",
            "local",
            "concurrent.futures with processes: the same API, CPU-bound work across cores",
        ),
        RungInfo(
            "asyncio",
            "local_ipc.asyncio_rung:AsyncioRung",
            "local",
            "one thread, cooperative switching at each await; CPU work on a process pool",
        ),
        RungInfo(
            "kombu",
            "broker_ipc.kombu_rung:KombuRung",
            "broker",
            "queue.Queue's put/get on a broker: messages leave the process, acks, JSON",
            batches=True,
        ),
        RungInfo(
            "celery",
            "broker_ipc.celery_rung:CeleryRung",
            "broker",
            "tasks and workers: apply_async, group/chord, acks_late, events, Flower",
            batches=True,
        ),
    )
}

WORKLOADS = ("sum", "pipeline", "tickets")


class Rungs(Mapping[str, type[Rung]]):
    """The rung classes by name, each imported when it is first looked up."""

    def __getitem__(self, name: str) -> type[Rung]:
        return INFO[name].load()

    def __iter__(self) -> Iterator[str]:
        return iter(INFO)

    def __len__(self) -> int:
        return len(INFO)


RUNGS: Mapping[str, type[Rung]] = Rungs()


def info(name: str) -> RungInfo:
    try:
        return INFO[name]
    except KeyError:
        raise BadInput(f"unknown rung {name!r}; choose one of: {', '.join(INFO)}") from None


def get_rung(name: str) -> type[Rung]:
    return info(name).load()


def names(channel: Channel | None = None, batches: bool | None = None) -> list[str]:
    """The rungs' names, bottom to top; only those on channel, or that batch, if asked."""
    return [
        n
        for n, i in INFO.items()
        if (channel is None or i.channel == channel) and (batches is None or i.batches == batches)
    ]
