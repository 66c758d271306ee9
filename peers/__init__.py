"""What a user would pick instead of Celery: Dramatiq, Huey and RQ, on the same Redis
and verified the same way as the celery rung.

    producer process -> the peer's own enqueue (JSON) -> Redis -> the peer's own workers
    workers: peers.work.handle -> handled list in Redis -> parent verifies

Each peer is a module of the same shape: the app, made from a broker URL; the task,
which is peers.work.handle; a send function for the producer; the worker command. The
bench only: `ladder bench --peers`, with the optional `peers` extra installed.
"""
