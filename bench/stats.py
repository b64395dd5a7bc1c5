"""Pure figures for the benchmark report: medians, percentiles and rate windows."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fixed_windows(times: Sequence[float], width: float = 1.0) -> list[int]:
    """Counts per consecutive `width`-second window from the first request; only whole windows
    (a trailing partial window would understate the rate)."""
    if not times:
        return []
    ordered = sorted(times)
    start = ordered[0]
    whole = int((ordered[-1] - start) // width)
    counts = [0] * whole
    for t in ordered:
        index = int((t - start) // width)
        if index < whole:
            counts[index] += 1
    return counts


def max_sliding_window(times: Sequence[float], width: float = 1.0) -> int:
    """The most requests in any half-open window [t, t + width) (it suffices to start at a request)."""
    ordered = sorted(times)
    best, end = 0, 0
    for begin, t in enumerate(ordered):
        while end < len(ordered) and ordered[end] < t + width:
            end += 1
        best = max(best, end - begin)
    return best
