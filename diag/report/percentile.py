"""The latency percentiles people read in `diag scan`'s summary and on the dashboard's overview.

One definition for both, so the same requests give the same p50/p95 whichever way they are looked
at (the dashboard once picked `int(p * n)`, which makes the p95 of 20 requests their maximum)."""

from __future__ import annotations

from typing import Iterable


def percentiles(values: Iterable[float], *ps: float) -> list[float | None]:
    """The values at percents `ps` (0–100) of `values`, nearest rank on the values sorted once;
    None for each when there are none."""
    s = sorted(values)
    if not s:
        return [None] * len(ps)
    last = len(s) - 1
    return [s[min(last, max(0, round(p / 100 * last)))] for p in ps]
