"""Summary statistics of timing samples (milliseconds)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..records import StageStats


def summarize(samples_ms: Sequence[float]) -> StageStats:
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarize")
    a = np.asarray(samples_ms, dtype=float)
    p10, p25, p50, p75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return StageStats(median=float(p50), mean=float(a.mean()), p10=float(p10), p90=float(p90),
                      iqr=float(p75 - p25), std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
                      n=int(a.size), samples=[round(float(x), 6) for x in a])
