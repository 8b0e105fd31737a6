"""The latency percentiles people read in `diag scan`'s summary and on the dashboard's overview.

One definition for both, so the same requests give the same p50/p95 whichever way they are looked
at (the dashboard once picked `int(p * n)`, which makes the p95 of 20 requests their maximum)."""

from __future__ import annotations

from typing import Iterable


def percentile(values: Iterable[float], p: float) -> float | None:
    """The value at percent `p` (0–100) of `values`, nearest rank on the sorted values; None for none."""
    s = sorted(values)
    if not s:
        return None
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
