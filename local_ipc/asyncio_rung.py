"""The asyncio rung: coroutines around a bounded asyncio.Queue, in one thread.

    producer coroutines -> asyncio.Queue(maxsize) -> consumer coroutines -> Consumed
    CPU work -> in_pool (what run_in_executor does, on a process pool) -> awaited result
    buyer coroutines -> a store reached with await, guarded by an asyncio.Lock -> Sales

Coroutines switch only at an await, so waiting overlaps (asyncio.sleep stands for a
socket) while a blocking call would stall them all: CPU work is sent to a process pool.
Stopped (Ctrl-C, SIGTERM), the pool's workers are terminated, not awaited; a worker that
died breaks the pool, and the run ends with a report that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import TypeVar

from core.errors import RunFailed
from core.forkserver import pool_death, process_pool, start_fork_server, stop_pool
from core.jobs import Job, PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import PROGRESS_EVERY, Progress, Rung, no_progress
from core.work import Item
from tasks.tickets import MemoryStore
from tasks.workloads import STOP, make_item, sum_range, work

T = TypeVar("T")


async def in_pool(pool: Executor, fn: Callable[..., T], *args: object) -> T:
    """fn(*args) in the pool, awaited; cancelling the await leaves the pool's call alone.

    run_in_executor ties the pool's future to the awaiting task: a stopped run cancels
    every task, and with it a call still queued in the pool, behind the pool's back; once
    stop_pool terminates the workers, the pool's own thread fails on that cancelled call
    (InvalidStateError, a traceback on stderr). Here the task waits on a future of its
    own, which the call's end only wakes, and stop_pool cancels the queued calls itself.
    """
    loop = asyncio.get_running_loop()
    call = pool.submit(fn, *args)
    ended: asyncio.Future[None] = loop.create_future()

    def end() -> None:
        if not ended.done():  # cancelled, when the run was stopped
            ended.set_result(None)

    def wake(_: Future[T]) -> None:
        # In the pool's thread. After a stop nothing waits, and the loop may be closed.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(end)

    call.add_done_callback(wake)
    await ended
    return call.result()


class AsyncioRung(Rung):
    name = "asyncio"

    def prepare(self, job: Job) -> None:
        start_fork_server()

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        return asyncio.run(self._sum(job, progress))

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        return asyncio.run(self._pipeline(job, progress))

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        return asyncio.run(self._tickets(job, progress))

    async def _sum(self, job: SumJob, progress: Progress) -> int:
        pool = process_pool(job.workers)

        async def chunk(start: int, stop: int) -> tuple[int, int] | None:
            try:
                return stop - start, await in_pool(pool, sum_range, start, stop)
            except BrokenExecutor:
                return None  # a worker died: from then on every chunk fails at once

        total = summed = 0
        try:
            for next_done in asyncio.as_completed([chunk(a, b) for a, b in job.ranges()]):
                result = await next_done
                if result:
                    total += result[1]
                    summed += 1
                    progress(result[0])
        except BaseException:
            stop_pool(pool)
            raise
        if summed < job.chunks:
            raise RunFailed(
                f"{pool_death(pool)}: the pool is broken, with {summed:,} of "
                f"{job.chunks:,} chunks summed"
            )
        pool.shutdown()
        return total

    async def _pipeline(self, job: PipelineJob, progress: Progress) -> Consumed:
        channel: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=job.queue_size)
        consumed = Consumed()
        payload = job.payload
        cpu_pool = process_pool(job.consumers) if job.work_kind == "cpu" and job.work_ms else None
        broken: list[int] = []  # the items that failed because the pool broke
        put = [0] * job.producers

        async def handle(item: Item) -> None:
            # handle_item's steps, with each wait made an await.
            taken = time.time()
            if cpu_pool:
                try:
                    await in_pool(cpu_pool, work, job.work_ms, "cpu")
                except BrokenExecutor:
                    broken.append(item["id"])  # a worker died: the item is lost
                    return
            elif job.work_ms:
                await asyncio.sleep(job.work_ms / 1000)
            consumed.record(item["id"], taken - item["t"])
            if len(consumed.ids) % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)

        async def produce(number: int, ids: range) -> None:
            for item_id in ids:
                if broken:
                    return  # nothing more can be handled
                if job.produce_ms:
                    await asyncio.sleep(job.produce_ms / 1000)
                await channel.put(make_item(item_id, payload))
                put[number] += 1

        async def consume() -> None:
            while (item := await channel.get()) is not STOP:
                await handle(item)
                channel.task_done()
            channel.task_done()

        try:
            consumers = [asyncio.create_task(consume()) for _ in range(job.consumers)]
            await asyncio.gather(*(produce(p, job.share(p)) for p in range(job.producers)))
            if job.end == "join":
                await channel.join()
                for task in consumers:
                    task.cancel()  # the asyncio idiom: consumers idle on get(), cancel them
                await asyncio.gather(*consumers, return_exceptions=True)
            else:
                for _ in consumers:
                    await channel.put(STOP)
                await asyncio.gather(*consumers)
        except BaseException:
            if cpu_pool:
                stop_pool(cpu_pool)
            raise
        if cpu_pool:
            if broken:
                consumed.deaths.append(
                    f"{pool_death(cpu_pool)}: the pool is broken, and every item it held or "
                    "had queued failed"
                )
                consumed.unsent = [job.share(p)[n:] for p, n in enumerate(put)]
            cpu_pool.shutdown()
        progress(len(consumed.ids) % PROGRESS_EVERY)
        return consumed

    async def _tickets(self, job: TicketsJob, progress: Progress) -> Sales:
        # A coroutine is switched out only at an await, so the race is at the awaits:
        # the gap, and the store's read and write, awaited as a database's would be
        # (asyncio.sleep(0) stands for the round trip).
        memory = MemoryStore(job.tickets)
        lock = asyncio.Lock()

        async def read() -> int:
            await asyncio.sleep(0)
            return memory.read()

        async def write(count: int) -> None:
            await asyncio.sleep(0)
            memory.write(count)

        async def buy() -> bool:
            # tasks.tickets.buy, with each wait made an await.
            seen = await read()
            if seen <= 0:
                return False
            if job.gap_ms:
                await asyncio.sleep(job.gap_ms / 1000)
            if job.unsafe:
                await write(seen - 1)
                return True
            async with lock:
                left = await read()
                if left <= 0:
                    return False
                await write(left - 1)
                return True

        async def buyer(ids: range) -> Sales:
            sales = Sales()
            for _ in ids:
                sales.add(await buy())
                progress(1)
            return sales

        sales = Sales(at_once=job.workers)
        for tally in await asyncio.gather(*(buyer(job.share(w)) for w in range(job.workers))):
            sales.extend(tally)
        sales.left = memory.read()
        return sales
