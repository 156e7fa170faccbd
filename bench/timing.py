"""One clock and one way to summarize it, for every benchmark in bench/."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

clock = time.perf_counter


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = clock()
    result = fn(*args)
    return clock() - start, result


def time_each(fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> list[float]:
    """Seconds taken by each call of ``fn(*args)``, in order."""
    samples = []
    for args in calls:
        start = clock()
        fn(*args)
        samples.append(clock() - start)
    return samples


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, p99 (nearest rank) and maximum of a list of durations in seconds."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_s": statistics.median(ordered),
        "p99_s": ordered[math.ceil(0.99 * len(ordered)) - 1],
        "max_s": ordered[-1],
    }
