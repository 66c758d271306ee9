"""comparison.png: throughput per rung, one panel per workload, local and broker rungs apart."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from core.results import RunResult
from ladder.demo import Row
from ladder.findings import short, short_rate
from ladder.registry import INFO, RUNGS

if TYPE_CHECKING:
    from ladder.sweep import Point  # the sweep draws itself with plot_sweep

LOCAL, BROKER, FAILED = "#4c72b0", "#dd8452", "#c44e52"
# A panel goes to a log scale when its fastest rung is this many times its slowest.
LOG_SPREAD = 30
LADDER = list(RUNGS)


def is_broker(rung: str) -> bool:
    return rung in INFO and INFO[rung].channel == "broker"


def what(result: RunResult) -> str:
    """What one run of the panel's workload moved, from its params."""
    p = result.params
    if result.workload == "sum":
        return f"1 + 2 + ... + {p['n']:,}"
    return f"{p['items']:,} items, {p['producers']} producers -> {p['consumers']} consumers"


def panel(ax: Axes, label: str, results: list[RunResult]) -> None:
    results.sort(key=lambda r: LADDER.index(r.rung) if r.rung in LADDER else len(LADDER))
    # A failed run, or one too short to time, has no bar.
    rates = [r.throughput if math.isfinite(r.throughput) else 0.0 for r in results]
    positive = [x for x in rates if x > 0] or [1.0]
    log = max(positive) / min(positive) > LOG_SPREAD
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 2, max(positive) * 12)
    else:
        ax.set_xlim(0, max(positive) * 1.4)
    left, right = ax.get_xlim()
    for y, (result, x) in enumerate(zip(results, rates, strict=True)):
        colour = BROKER if is_broker(result.rung) else LOCAL
        if result.verified:
            ax.barh(y, x, color=colour)
            text = short_rate(x, result.unit)
        else:
            # Hatched across the panel when there is nothing to draw, so a failure shows.
            width = x if x > 0 else right
            ax.barh(y, width - left, left=left, color="none", edgecolor=FAILED, hatch="///")
            failure = textwrap.shorten(f"failed: {result.note or 'no result'}", 40)
            text = f"{short_rate(x, result.unit)}, not verified" if x > 0 else failure
        ax.annotate(
            text,
            (x if x > 0 else left, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            color="black" if result.verified else FAILED,
            fontweight="normal" if result.verified else "bold",
            bbox=None if x > 0 else {"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
    ax.set_yticks(range(len(results)), [r.rung for r in results])
    ax.set_ylim(len(results) - 0.5, -0.5)
    ax.set_title(f"{label}\n{what(results[0])}", fontsize=11)
    ax.set_xlabel(results[0].unit + (", log scale" if log else ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: short(x, digits=3)))
    if not any(rates):
        ax.set_xticks([])  # nothing was measured: a scale would only mislead
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def plot_comparison(rows: Sequence[Row], path: Path) -> Path:
    """Draw rows as a PNG at path: one panel per workload in the order run; return path."""
    if not rows:
        raise ValueError("no rows to plot")
    labels = list(dict.fromkeys(row.label for row in rows))
    tallest = max(sum(row.label == label for row in rows) for label in labels)
    figure = Figure(figsize=(1.5 + 4.7 * len(labels), 1.8 + 0.4 * tallest), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, label in zip(figure.subplots(1, len(labels), squeeze=False)[0], labels, strict=True):
        panel(ax, label, [row.result for row in rows if row.label == label])
    figure.suptitle("Throughput per rung, higher is better; every run's result checked")
    brokers = [is_broker(row.result.rung) for row in rows]
    kinds = [
        (Patch(color=LOCAL, label="local rungs (no broker)"), not all(brokers)),
        (Patch(color=BROKER, label="broker rungs (messages through Redis)"), any(brokers)),
        (
            Patch(facecolor="none", edgecolor=FAILED, hatch="///", label="not verified"),
            not all(row.result.verified for row in rows),
        ),
    ]
    handles = [kind for kind, shown in kinds if shown]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    figure.savefig(path, dpi=120)
    return path


# One line style per rung of a sweep: local rungs solid, broker rungs dashed.
SWEEP_MARKERS = {"threads": "o", "processes": "s", "kombu": "^", "celery": "D"}


def plot_sweep(points: Sequence[Point], sweep: str, xlabel: str, context: str, path: Path) -> Path:
    """One sweep as a PNG at path: items/s of each rung at each swept value, and the
    ideal (consumers x 1000 / work_ms) where there is one; return path."""
    chosen = [p for p in points if p.sweep == sweep]
    if not chosen:
        raise ValueError(f"no points of the {sweep} sweep to plot")
    xs = sorted({p.x for p in chosen})
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    # Evenly spaced, labelled with the values: 0 ms has no place on a log scale.
    position = {x: i for i, x in enumerate(xs)}
    ideal = {p.x: p.ideal for p in chosen if p.ideal}
    if ideal:
        ax.plot(
            [position[x] for x in ideal],
            list(ideal.values()),
            color="grey",
            linestyle=":",
            label="ideal: consumers x 1000 / work_ms",
        )
    for rung in dict.fromkeys(p.rung for p in chosen):
        series = sorted((p for p in chosen if p.rung == rung), key=lambda p: p.x)
        ax.plot(
            [position[p.x] for p in series],
            [p.throughput if p.verified else math.nan for p in series],
            color=BROKER if is_broker(rung) else LOCAL,
            linestyle="--" if is_broker(rung) else "-",
            marker=SWEEP_MARKERS.get(rung, "o"),
            label=rung,
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("items/s, log scale")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: short(y, digits=3)))
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"Throughput as {xlabel} grows ({context}); every run checked", fontsize=10)
    ax.legend(frameon=False, fontsize=9)
    figure.savefig(path, dpi=120)
    return path
