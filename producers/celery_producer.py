"""A Celery producer: what runs in the celery rung's producer processes.

    ids -> apply_async(tasks.handle_item or tasks.handle_batch) -> the job's queue,
           held back while that Redis list is full

A plain Celery client that sends tasks by name: it needs the workers' broker, not
their code.
"""

from __future__ import annotations

from core.broker import RunKeys
from core.forkserver import SentCounter
from core.jobs import Job, PipelineJob, SumJob, TicketsJob
from core.work import CPU_QUEUE, IO_QUEUE, Item, queue_for
from producers.sending import send_all
from tasks.celery_app import make_app

TASK, BATCH_TASK = "tasks.handle_item", "tasks.handle_batch"


def queue_of(job: Job) -> str:
    """The queue a job's tasks are routed to (tasks/celery_app.py's ROUTES): the sum's
    chunks and CPU-bound items to CPU_QUEUE, waiting work to IO_QUEUE. On Redis, a queue
    is the list of that name, which the producers watch for backpressure."""
    if isinstance(job, SumJob):
        return CPU_QUEUE
    if isinstance(job, TicketsJob):
        return IO_QUEUE
    return queue_for(job.work_kind, job.work_ms)


def produce(
    url: str, backend_url: str, keys: RunKeys, ids: range, job: PipelineJob, sent: SentCounter
) -> None:
    """Send one tasks.handle_item per id (tasks.handle_batch per job.batch ids), pausing
    while the queue holds queue_size messages."""
    queue = queue_of(job)
    task = make_app(url, backend_url).signature(BATCH_TASK if job.batched else TASK, queue=queue)

    def send(message: Item | list[Item]) -> None:
        task.apply_async((message, keys.run_id, job.work_ms, job.work_kind))

    send_all(url, queue, send, ids, job, sent)
