"""`ladder serve` and `ladder load`: the upper-casing TCP server in one concurrency model,
and K connections sending M lines each to it, every reply checked."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console, RenderableType

from core.commandline import PORT_NUMBER, OneOf, Whole
from ladder.cli.options import (
    COUNTS,
    MODEL_LIST,
    State,
    command,
    json_option,
    pass_state,
)
from ladder.cli.output import Outcome, finish
from ladder.progress import Progress
from servers import HOST, MODELS, PORT


@command("serve", help="A TCP server that upper-cases lines, in one model.")
@click.option("--model", required=True, type=OneOf(list(MODELS)), help=", ".join(MODELS))
@click.option("--host", default=HOST, show_default=True)
@click.option(
    "--port", type=PORT_NUMBER, default=PORT, show_default=True, help="0 picks a free one"
)
def serve(model: str, host: str, port: int) -> None:
    # The server replaces this process: gevent's model must patch the standard library
    # before anything imports socket, and a signal then reaches the server itself.
    argv = ["-m", MODELS[model], "--host", host, "--port", str(port)]
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *argv])


@command("load", help="K connections sending M lines each to a server, every reply checked.")
@click.option("--host", default=HOST, show_default=True)
@click.option("--port", type=PORT_NUMBER, default=PORT, show_default=True)
@click.option(
    "--connections",
    type=COUNTS,
    default=None,
    metavar="K",
    help="K, or several such as 1,50,500 (default 50; with --compare 1,50,500)",
)
@click.option(
    "--messages",
    type=Whole(),
    default=None,
    metavar="M",
    help="per connection (default: 50,000 in all)",
)
@click.option(
    "--compare",
    is_flag=True,
    help="start each model's server on a free port, load it at every K, and compare",
)
@click.option(
    "--models", type=MODEL_LIST, default=",".join(MODELS), help="with --compare: a subset"
)
@json_option("JSON")
@pass_state
def load(
    state: State,
    host: str,
    port: int,
    connections: list[int] | None,
    messages: int | None,
    compare: bool,
    models: list[str],
    as_json: bool,
) -> int:
    # asyncio and the client are imported only for this command.
    from servers import compare as servers
    from servers.load import check, messages_for, run_load

    if compare:
        progress = Progress(Console(stderr=True), as_json)
        rows = servers.compare(
            models,
            connections or servers.CONNECTIONS,
            messages,
            on_row=lambda row: progress.say(servers.progress_line(row)),
        )
        records = [{"model": row.model, **row.load.to_dict()} for row in rows]
        shown: list[RenderableType] = [
            servers.table(rows),
            *(f"- {sentence}" for sentence in servers.findings(rows)),
        ]
        return finish(Outcome(records, shown, all(r.load.ok for r in rows)), as_json, state.out)
    ks = connections or [50]
    for k in ks:
        check(k, messages_for(k, messages))
    results = [run_load(host, port, k, messages_for(k, messages)) for k in ks]
    wrong = [
        f"- K = {r.connections}: {r.replies:,} of {r.requests:,} answered right; "
        f"first problem: {r.problem}"
        for r in results
        if not r.ok
    ]
    return finish(
        Outcome(
            [r.to_dict() for r in results],
            [servers.load_table(results), *wrong],
            all(r.ok for r in results),
        ),
        as_json,
        state.out,
    )
