"""queue-ladder: the same workloads on every rung, from queue.Queue to Celery on Redis."""
