"""The one table the benchmark prints: measurement | figure | baseline | ratio | target | met?"""
from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    measurement: str
    figure: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None  # None: a figure shown for context, with no target of its own


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1): the value at or below which `share` of them lie."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-share * len(ordered) // 1)))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(figure: float, baseline: float) -> str:
    return f"{figure / baseline:.2f}×" if baseline else "—"


def render(rows: list[Row]) -> str:
    """A Markdown table, readable as printed and pasted as is into docs/benchmarks.md."""
    header = ("measurement", "figure", "baseline", "ratio", "target", "met?")
    cells = [header] + [(r.measurement, r.figure, r.baseline, r.ratio, r.target, _met(r.met)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _met(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "NO")
