"""The statistics every benchmark reports: percentiles of a list of timings.

One helper for the whole of :mod:`nearstate.bench`, so that a
"p99" means the same thing in every table of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` of ``values`` at or
    below it (``0 < q <= 1``; ``values`` not empty)."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def percentiles(xs: list[float], digits: int = 2) -> dict[str, float]:
    """p50 (the median), p90, p99 and max of ``xs``, rounded to ``digits``, and ``n``; all
    zero when ``xs`` is empty."""
    if not xs:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], digits)

    return {
        "p50": round(statistics.median(s), digits),
        "p90": q(0.90),
        "p99": q(0.99),
        "max": round(s[-1], digits),
        "n": len(s),
    }


__all__ = ["percentile", "percentiles"]
