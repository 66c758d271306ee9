"""The private RabbitMQ node (core/rabbitmq.py): it starts on loopback with a user of its
own, keeps its password off command lines and out of its files, and leaves nothing
behind, whether it stops or fails to start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
from kombu import Connection

from core.errors import RunFailed
from core.rabbitmq import RabbitNode, logs_in
from core.wait import wait_until
from tests.support.cli import ROOT
from tests.support.proctree import cmdline, descendants, kill_all, running
from tests.support.rabbit_nodes import RabbitNodes, node_processes, of_name, of_node

pytestmark = pytest.mark.slow

SHARED_PORT = 5672  # the machine's RabbitMQ, which no test uses


# A program that starts a node and says its name, then that the node is up.
STARTS_A_NODE = """
from core.rabbitmq import RabbitNode
node = RabbitNode()
print(node.name, flush=True)
with node:
    print("up", flush=True)
"""


def folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("queue-ladder-rabbit-*"))


@pytest.mark.timeout(180)
def test_a_json_message_round_trips_on_loopback_with_its_own_user(rabbit_node: RabbitNode) -> None:
    assert rabbit_node.port != SHARED_PORT
    assert not rabbit_node.name.startswith("rabbit@")
    item = {"id": 7, "text": "ünïcode", "values": [1.5, None, True]}
    with Connection(rabbit_node.url, connect_timeout=5) as connection:
        queue = connection.SimpleQueue(f"test-{uuid.uuid4().hex}", serializer="json")
        try:
            queue.put(item)
            message = queue.get(block=True, timeout=10)
            message.ack()
        finally:
            queue.close()
    assert message.content_type == "application/json"
    assert message.payload == item

    listening = [
        connection.laddr
        for process in node_processes(rabbit_node)
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    ]
    assert ("127.0.0.1", rabbit_node.port) in listening
    assert {address.ip for address in listening} <= {"127.0.0.1", "::1"}

    assert rabbit_node.user != "guest"
    port = rabbit_node.port
    assert not logs_in(f"amqp://guest:guest@127.0.0.1:{port}//")
    assert not logs_in(f"amqp://{rabbit_node.user}:wrong@127.0.0.1:{port}//")
    assert rabbit_node.masked_url.startswith(f"amqp://{rabbit_node.user}:***@127.0.0.1:{port}/")


@pytest.mark.timeout(180)
def test_stopping_leaves_no_process_and_no_folder(rabbit_nodes: RabbitNodes) -> None:
    with rabbit_nodes.running() as node:
        processes = node_processes(node)
        workdir = node.workdir
        assert {"beam.smp", "epmd", "erl_child_setup"} <= {p.name() for p in processes}
        assert {"beam.smp", "epmd"} <= {p.name() for p in of_node(node)}
    assert not running(processes)
    assert not of_node(node)
    assert not workdir.exists()


@pytest.mark.timeout(120)
def test_the_password_is_on_no_command_line_and_in_no_file(rabbit_node: RabbitNode) -> None:
    # A refused login is logged: the log then has something to say about the user.
    assert not logs_in(f"amqp://{rabbit_node.user}:wrong@127.0.0.1:{rabbit_node.port}//")
    secret = rabbit_node.password
    assert not [cmdline(p) for p in psutil.process_iter() if secret in cmdline(p)]
    files = [path for path in rabbit_node.workdir.rglob("*") if path.is_file()]
    assert any(path.parent == rabbit_node.log_dir for path in files)
    assert not [path for path in files if secret.encode() in path.read_bytes()]


@pytest.mark.timeout(120)
def test_a_node_that_cannot_start_fails_in_one_line_and_leaves_nothing() -> None:
    before = folders()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = RabbitNode(port=port, start_timeout_s=60)
        started = time.monotonic()
        with pytest.raises(RunFailed) as failure, node:
            pass
        took_s = time.monotonic() - started
    message = str(failure.value)
    assert "\n" not in message
    assert node.name in message and str(port) in message
    assert took_s < 60 + 20
    assert not of_node(node)
    assert folders() <= before


@pytest.mark.timeout(120)
def test_ctrl_c_while_the_node_starts_stops_all_of_it() -> None:
    before = folders()
    program = subprocess.Popen(
        [sys.executable, "-c", STARTS_A_NODE], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    seen: list[psutil.Process] = []
    try:
        assert program.stdout is not None
        name = program.stdout.readline().strip()
        below = psutil.Process(program.pid)
        # Mid-boot: the Erlang VM runs, the node does not take a login yet.
        assert wait_until(lambda: "beam.smp" in {p.name() for p in descendants(below)}, 60)
        seen = descendants(below)
        os.kill(program.pid, signal.SIGINT)
        program.wait(timeout=60)
        assert program.returncode != 0
        assert not running(seen)
        assert not [p for p in running(psutil.process_iter()) if of_name(p, name)]
        assert folders() <= before
    finally:
        kill_all(program, seen)
