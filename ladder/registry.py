"""The rungs by name: the CLI's choices, the demo's matrix and the tests all read RUNGS."""

from __future__ import annotations

from ladder.errors import BadInput
from ladder.rung import Rung
from local_ipc.asyncio_rung import AsyncioRung
from local_ipc.process_pool import ProcessPoolRung
from local_ipc.processes import ProcessesRung
from local_ipc.serial import SerialRung
from local_ipc.thread_pool import ThreadPoolRung
from local_ipc.threads import ThreadsRung
from producers.celery_producer import CeleryRung
from producers.kombu_producer import KombuRung

RUNGS: dict[str, type[Rung]] = {
    rung.name: rung
    for rung in (
        SerialRung,
        ThreadsRung,
        ProcessesRung,
        ThreadPoolRung,
        ProcessPoolRung,
        AsyncioRung,
        KombuRung,
        CeleryRung,
    )
}

WORKLOADS = ("sum", "pipeline", "tickets")


def get_rung(name: str) -> type[Rung]:
    try:
        return RUNGS[name]
    except KeyError:
        raise BadInput(f"unknown rung {name!r}; choose one of: {', '.join(RUNGS)}") from None
