"""The serial rung: a plain loop, the baseline every speedup is measured against.

producer -> (no channel: the very next line) -> consumer -> Consumed
buyer after buyer -> the store: one at a time, so even the naive buy cannot race
"""

from __future__ import annotations

import time

from core.jobs import PipelineJob, SumJob, TicketsJob
from core.results import Consumed, Sales
from core.rung import PROGRESS_EVERY, Progress, Rung, no_progress
from tasks.tickets import MemoryStore, buy
from tasks.workloads import handle_item, make_item, sum_range


class SerialRung(Rung):
    name = "serial"

    def run_sum(self, job: SumJob, progress: Progress = no_progress) -> int:
        total = 0
        for start, stop in job.ranges():
            total += sum_range(start, stop)
            progress(stop - start)
        return total

    def run_pipeline(self, job: PipelineJob, progress: Progress = no_progress) -> Consumed:
        consumed = Consumed()
        payload = job.payload
        for producer in range(job.producers):
            for item_id in job.share(producer):
                if job.produce_ms:
                    time.sleep(job.produce_ms / 1000)
                consumed.record(
                    *handle_item(make_item(item_id, payload), job.work_ms, job.work_kind)
                )
                if len(consumed.ids) % PROGRESS_EVERY == 0:
                    progress(PROGRESS_EVERY)
        progress(len(consumed.ids) % PROGRESS_EVERY)
        return consumed

    def run_tickets(self, job: TicketsJob, progress: Progress = no_progress) -> Sales:
        store = MemoryStore(job.tickets)
        # No lock: with one buyer at a time nothing can come between check and buy.
        sales = Sales(at_once=1)
        for _ in range(job.buyers):
            sales.add(buy(store, job.gap_ms, None))
            progress(1)
        sales.left = store.read()
        return sales
