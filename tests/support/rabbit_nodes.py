"""Private RabbitMQ nodes, the one way a test starts a RabbitMQ: its own name, ports,
epmd, user and folder, and stopped however the test ends. Never the machine's shared
node (rabbit@<host>, on 5672)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil

from core.rabbitmq import RabbitNode
from tests.support.proctree import cmdline, descendants, running


class RabbitNodes:
    """Starts private nodes, each for as long as a `with running():` block lasts."""

    def __init__(self) -> None:
        self.started: list[RabbitNode] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[RabbitNode]:
        """A node, started and taking its user's login."""
        node = RabbitNode()
        self.started.append(node)
        try:
            with node:
                yield node
        finally:
            self.started.remove(node)

    def stop_all(self) -> None:
        """Whatever a block left running, as a test interrupted mid-start might."""
        for node in self.started:
            node.close()


def node_processes(node: RabbitNode) -> list[psutil.Process]:
    """What runs of the node now: rabbitmq-server, epmd, and all below them."""
    roots = [psutil.Process(p.pid) for p in (node.server, node.epmd) if p is not None]
    return running([*roots, *(child for root in roots for child in descendants(root))])


def of_name(process: psutil.Process, name: str) -> bool:
    """Whether process was started as node name: with it in its environment, where every
    process of the node has it (beam.smp's command line does not)."""
    try:
        return process.environ().get("RABBITMQ_NODENAME") == name
    except psutil.Error:
        return False


def of_node(node: RabbitNode) -> list[psutil.Process]:
    """Every process on the machine that belongs to the node, its epmd included."""
    epmd = f"-port {node.epmd_port} "
    return running(
        process
        for process in psutil.process_iter()
        if of_name(process, node.name) or epmd in cmdline(process)
    )
