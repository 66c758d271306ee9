"""Tickets on every rung: safe never oversells, --unsafe shows the race, and the deadlock demo.

No assertion here is about time: on a shared 2-core machine only counts are reliable.
The racy rungs run the safe sale several times, since one clean run of a race proves
little; the unsafe runs use a gap long enough that buyers always overlap in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from core.broker import RunKeys, client
from core.errors import BadInput
from core.jobs import TicketLock, TicketsJob
from core.results import RunResult, Sales, verify_tickets
from core.rung import Rung
from core.settings import Settings
from ladder.registry import RUNGS, names
from ladder.runner import run
from local_ipc import deadlock
from tasks.tickets import RedisTickets
from tests.support.cli import check_bad_input, ladder
from tests.support.watch import Counter

LOCAL_RUNGS = names("local")
BROKER_RUNGS = names("broker")
RACY_LOCAL_RUNGS = [name for name in LOCAL_RUNGS if name != "serial"]

SAFE = TicketsJob(tickets=30, buyers=60, workers=6, gap_ms=1.0)
FEW_BUYERS = TicketsJob(tickets=50, buyers=20, workers=4, gap_ms=1.0)
# 8 buyers at once, each waiting 20 ms between its check and its buy: many overlap.
UNSAFE = TicketsJob(tickets=10, buyers=40, workers=8, gap_ms=20.0, unsafe=True)


def test_every_rung_is_found() -> None:
    assert RACY_LOCAL_RUNGS == ["threads", "processes", "thread-pool", "process-pool", "asyncio"]
    assert BROKER_RUNGS == ["kombu", "celery"]


def check_safe(rung: Rung, job: TicketsJob) -> RunResult:
    progress = Counter()
    result = run(rung, job, progress)
    assert (result.rung, result.workload, result.unit) == (rung.name, "tickets", "tickets/s")
    assert result.params == job.params()
    assert result.verified, result.note
    assert result.note == ""
    assert result.oversold == 0
    assert result.expected == result.got == min(job.tickets, job.buyers)
    assert result.got + result.turned_away == job.buyers
    assert result.lost == 0
    assert progress.total == job.buyers
    return result


def check_unsafe_oversold(rung: Rung, job: TicketsJob) -> RunResult:
    result = run(rung, job, Counter())
    assert result.oversold > 0, result
    assert result.got == job.tickets + result.oversold
    assert result.got + result.turned_away == job.buyers
    assert result.verified, result.note
    assert result.note.startswith(f"oversold by {result.oversold:,}: the race, shown")
    return result


@pytest.fixture(params=LOCAL_RUNGS)
def local_rung(request: pytest.FixtureRequest) -> Iterator[Rung]:
    with RUNGS[request.param]() as started:
        yield started


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_safe_sells_exactly_the_tickets_on_every_local_rung(local_rung: Rung) -> None:
    for _ in range(1 if local_rung.name == "serial" else 3):
        check_safe(local_rung, SAFE)
    check_safe(local_rung, FEW_BUYERS)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", RACY_LOCAL_RUNGS)
def test_unsafe_oversells_on_the_concurrent_local_rungs(name: str) -> None:
    with RUNGS[name]() as rung:
        check_unsafe_oversold(rung, UNSAFE)


@pytest.mark.timeout(30)
def test_serial_cannot_race_even_unsafe() -> None:
    with RUNGS["serial"]() as rung:
        result = run(rung, TicketsJob(tickets=5, buyers=12, gap_ms=1.0, unsafe=True))
    assert result.verified
    assert (result.got, result.oversold, result.turned_away) == (5, 0, 7)
    assert result.note == "unsafe, but no oversell: one buyer at a time cannot race"


@pytest.mark.timeout(20)
def test_no_tickets_every_buyer_told_no() -> None:
    with RUNGS["threads"]() as rung:
        result = run(rung, TicketsJob(tickets=0, buyers=10, workers=3))
    assert result.verified, result.note
    assert (result.got, result.turned_away, result.throughput) == (0, 10, 0)


@pytest.fixture(params=BROKER_RUNGS)
def broker_rung(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Rung]:
    if request.param == "celery":
        request.getfixturevalue("celery_workers")
    with RUNGS[request.param](Settings(broker_url=redis_url)) as started:
        yield started


def ticket_keys(redis_url: str) -> list[str]:
    return [
        key
        for key in client(redis_url).scan_iter(match="*ladder:*")
        if "buyers" in key or key.endswith(("tickets", "answers"))
    ]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("lock", ["atomic", "redis-lock"])
def test_safe_sells_exactly_the_tickets_over_the_broker(
    broker_rung: Rung, lock: TicketLock, redis_url: str
) -> None:
    for _ in range(2):
        check_safe(broker_rung, TicketsJob(tickets=20, buyers=40, workers=4, gap_ms=1.0, lock=lock))
    assert ticket_keys(redis_url) == []


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_unsafe_oversells_over_the_broker(broker_rung: Rung, redis_url: str) -> None:
    check_unsafe_oversold(
        broker_rung, TicketsJob(tickets=8, buyers=24, workers=4, gap_ms=20.0, unsafe=True)
    )
    assert ticket_keys(redis_url) == []


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", ["atomic", "redis-lock"])
def test_a_buyer_delivered_twice_buys_once(redis_url: str, mode: str) -> None:
    keys = RunKeys.new()
    tickets = RedisTickets(client(redis_url), keys.prefix)
    with keys.lease(redis_url):
        tickets.fill(2)
        assert tickets.buy(0, 0.0, mode) is True
        assert tickets.buy(0, 0.0, mode) is True  # again: the first answer stands
        assert tickets.buy(1, 0.0, mode) is True
        assert tickets.buy(2, 0.0, mode) is False
        assert tickets.sales() == Sales(sold=2, turned_away=1, left=0)


def sales(sold: int, turned_away: int, left: int, at_once: int = 4) -> Sales:
    return Sales(sold=sold, turned_away=turned_away, left=left, at_once=at_once)


@pytest.mark.parametrize(
    ("job", "outcome", "verified", "note"),
    [
        (TicketsJob(tickets=10, buyers=20), sales(10, 10, 0), True, ""),
        (
            TicketsJob(tickets=10, buyers=20),
            sales(12, 8, 0),
            False,
            "oversold by 2; the store shows 0 left after 12 sold",
        ),
        (
            TicketsJob(tickets=10, buyers=20),
            sales(9, 10, 1),
            False,
            "1 buyer never answered; sold 9 of 10",
        ),
        (
            TicketsJob(tickets=10, buyers=20),
            sales(10, 10, 3),
            False,
            "the store shows 3 left after 10 sold",
        ),
        (
            TicketsJob(tickets=10, buyers=20, unsafe=True),
            sales(17, 3, 0),
            True,
            "oversold by 7: the race, shown",
        ),
        (
            TicketsJob(tickets=10, buyers=5, unsafe=True),
            sales(5, 0, 8),
            True,
            "3 sales overwritten by another's: the race, shown "
            "(no oversell: 5 buyers cannot overrun 10 tickets)",
        ),
        (
            TicketsJob(tickets=10, buyers=20, unsafe=True),
            sales(10, 10, 0),
            False,
            "unsafe, but no oversell observed: the race did not happen this time "
            "(a longer --gap-ms or more --workers makes it likely)",
        ),
        (
            TicketsJob(tickets=10, buyers=20, unsafe=True),
            sales(10, 10, 0, at_once=1),
            True,
            "unsafe, but no oversell: one buyer at a time cannot race",
        ),
    ],
    ids=[
        "safe",
        "safe-oversold",
        "safe-unanswered",
        "safe-store-disagrees",
        "unsafe-oversold",
        "unsafe-overwritten",
        "unsafe-no-race",
        "unsafe-one-at-a-time",
    ],
)
def test_verify_tickets(job: TicketsJob, outcome: Sales, verified: bool, note: str) -> None:
    result = verify_tickets("threads", job, outcome, 1.0)
    assert (result.verified, result.note) == (verified, note)
    assert result.expected == min(job.tickets, job.buyers)
    assert result.got == outcome.sold
    assert result.oversold == max(0, outcome.sold - job.tickets)
    assert result.turned_away == outcome.turned_away
    assert result.lost == job.buyers - outcome.sold - outcome.turned_away


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tickets": -1}, "tickets must be at least 0 (got -1)"),
        ({"buyers": 0}, "buyers must be at least 1 (got 0)"),
        ({"workers": 0}, "workers must be at least 1 (got 0)"),
        ({"gap_ms": -1}, "gap_ms must be between 0 and 60000 (got -1)"),
        ({"unsafe": "yes"}, "unsafe must be true or false (got 'yes')"),
        ({"lock": "mutex"}, "lock must be one of: atomic, redis-lock (got 'mutex')"),
    ],
)
def test_tickets_job_is_validated(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput) as raised:
        TicketsJob(**values)
    assert str(raised.value) == message


TICKETS = ["run", "--rung", "threads", "--workload", "tickets"]


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "names"),
    [
        ([*TICKETS, "--buyers", "0"], "--buyers must be at least 1 (got 0)"),
        ([*TICKETS, "--tickets", "-1"], "--tickets must be at least 0 (got -1)"),
        ([*TICKETS, "--workers", "0"], "--workers must be at least 1 (got 0)"),
        ([*TICKETS, "--gap-ms", "-1"], "--gap-ms must be between 0 and"),
        ([*TICKETS, "--gap-ms", "nan"], "argument --gap-ms:"),
        ([*TICKETS, "--lock", "mutex"], "argument --lock:"),
        ([*TICKETS, "--lock", "redis-lock"], "--lock applies to the broker rungs (kombu, celery)"),
        (
            ["run", "--rung", "kombu", "--workload", "tickets", "--lock", "atomic", "--unsafe"],
            "--lock guards a safe run",
        ),
        (["deadlock", "--timeout-s", "0"], "--timeout-s must be between 0 and 60"),
    ],
    ids=[
        "buyers-0",
        "tickets-neg",
        "workers-0",
        "gap-neg",
        "gap-nan",
        "lock-bad",
        "lock-local",
        "lock-unsafe",
        "deadlock-timeout",
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], names: str) -> None:
    check_bad_input(ladder(*args), names)


@pytest.mark.timeout(30)
def test_run_unsafe_json_reports_the_oversell() -> None:
    done = ladder(
        *TICKETS, "--tickets", "10", "--buyers", "40", "--gap-ms", "20", "--unsafe", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["verified"] is True
    assert result["oversold"] > 0
    assert result["got"] == 10 + result["oversold"]
    assert result["note"] == f"oversold by {result['oversold']:,}: the race, shown"


@pytest.mark.timeout(20)
def test_the_deadlock_demo_shows_each_deadlock_and_its_fix() -> None:
    outcomes = {outcome.case: outcome for outcome in deadlock.demo(timeout_s=0.2)}
    assert {case: o.deadlocked for case, o in outcomes.items()} == {
        "opposite orders: A then B, B then A": True,
        "one order: A then B in both": False,
        "re-entry with a Lock": True,
        "re-entry with an RLock": False,
    }
    assert all(outcome.as_meant for outcome in outcomes.values())


@pytest.mark.slow
@pytest.mark.timeout(20)
def test_ladder_deadlock_exits_0_and_never_hangs() -> None:
    done = ladder("deadlock", "--timeout-s", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    assert [o["deadlocked"] for o in outcomes] == [True, False, True, False]
    assert all(o["as_meant"] for o in outcomes)
    table = ladder("deadlock", "--timeout-s", "0.2")
    assert table.returncode == 0
    assert "opposite orders" in table.stdout
