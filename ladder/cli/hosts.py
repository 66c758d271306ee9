"""`ladder bench hosts`: the celery pipeline with one worker on each of 1, 2 and 3 hosts."""

from __future__ import annotations

from rich.console import Console

from core.commandline import fail
from core.errors import EXIT_FAILED
from core.jobs import PipelineJob
from ladder.cli.options import State, command, json_option, pass_state, quick_option
from ladder.cli.output import Outcome, finish
from ladder.progress import Progress


@command(
    "hosts",
    help="Scale-out: Redis in one network namespace, a Celery worker in each of 1, 2 and 3 "
    "others (root and iproute2 needed); the I/O-bound pipeline on each.",
)
@quick_option("fewer items")
@json_option("one JSON list")
@pass_state
def hosts(state: State, quick: bool, as_json: bool) -> int:
    from ladder import netns

    reason = netns.unavailable()
    if reason:
        fail(f"bench hosts needs network namespaces: {reason}", EXIT_FAILED)
    job = PipelineJob(items=300 if quick else 1_500, producers=2, consumers=8, work_ms=10)
    progress = Progress(Console(stderr=True), as_json)

    def done(run: netns.HostsRun) -> None:
        progress.finished(f"{run.hosts} worker host{'s' if run.hosts > 1 else ''}", run.result)

    runs = netns.scale_out(job, done=done)
    return finish(
        Outcome(
            [{"hosts": r.hosts, **r.result.to_dict()} for r in runs],
            [netns.table(runs)],
            all(r.result.verified for r in runs),
        ),
        as_json,
        state.out,
    )
