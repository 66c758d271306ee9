"""`ladder bench --sweep`: the points it runs, what it concludes, what it draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from ladder import sweep
from ladder.sweep import Point

PNG = b"\x89PNG\r\n\x1a\n"


def point(name: str, x: float, rung: str, rate: float, verified: bool = True) -> Point:
    ideal = (8 if name == "work_ms" else x) * 1000 / (x if name == "work_ms" else 10) if x else None
    return Point(name, x, rung, rate, ideal, verified, "" if verified else "3 lost")


def test_runs_last_about_a_second_at_the_ideal_rate_within_bounds() -> None:
    assert sweep.items_for(8, 10.0, quick=False) == 1_600
    assert sweep.items_for(8, 100.0, quick=False) == 160
    assert sweep.items_for(8, 1.0, quick=False) == sweep.MAX_ITEMS
    assert sweep.items_for(1, 10.0, quick=True) == sweep.MIN_ITEMS
    every = list(sweep.jobs(quick=True))
    assert [(name, x) for name, x, _ in every] == [
        *(("work_ms", w) for w in sweep.WORK_MS),
        *(("consumers", c) for c in sweep.CONSUMERS),
    ]


def test_a_rung_catches_up_from_the_first_size_it_stays_near_threads() -> None:
    points = [
        point("work_ms", 1, "celery", 800),  # ideal 8,000
        point("work_ms", 10, "celery", 700),  # ideal 800
        point("work_ms", 100, "celery", 79),  # ideal 80
        point("work_ms", 1, "kombu", 1_600),
        point("work_ms", 10, "kombu", 700, verified=False),
        point("work_ms", 100, "kombu", 75),
        point("work_ms", 1, "threads", 7_900),
        point("work_ms", 10, "threads", 790),
        point("work_ms", 100, "threads", 80),
    ]
    assert sweep.within(points, "celery", "threads") == points[1]
    # A failed run never counts as caught up.
    assert sweep.within(points, "kombu", "threads") == points[5]
    shares, near = sweep.findings(points)
    assert "celery 10% / 88% / 99%" in shares
    assert "threads 99% / 99% / 100%" in shares
    assert "celery from 10 ms; kombu from 100 ms; none overtook it" in near


def test_the_consumers_sweep_says_how_far_each_rung_scaled() -> None:
    points = [point("consumers", c, "kombu", 90 * c) for c in sweep.CONSUMERS]
    assert sweep.findings(points)[-1].endswith("kombu 90 -> 720 items/s (8x).")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_local_sweep_runs_every_point_verified_and_draws_both_plots(tmp_path: Path) -> None:
    points = sweep.sweep(Settings(), quick=True, rungs=["threads"])
    assert len(points) == len(sweep.WORK_MS) + len(sweep.CONSUMERS)
    assert all(p.verified for p in points), [p.note for p in points]
    paths = sweep.write(points, tmp_path)
    assert [p.name for p in paths] == ["sweep.json", "sweep-work.png", "sweep-consumers.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths[1:])
    assert sweep.table(points).row_count == len(points)
