"""Summary statistics of timing samples (milliseconds), with a distribution-free interval of the
median.

Latency samples are skewed and heavy-tailed (a descheduled iteration can take twice as long),
so the stopping rule and the reports use the median with an interval from order statistics:
the exact binomial (sign-test) interval, which assumes nothing about the distribution. With
n samples the interval is ``[x_(l), x_(n+1-l)]`` for the largest ``l`` whose tail probability
``P(Bin(n, 1/2) < l)`` is at most ``(1 - confidence) / 2``. Below 6 samples no 95 % interval
exists (``ci_low``/``ci_high``/``ci_rel`` are None): that is why the timer's floor is higher.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..results.records import StageStats


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> Tuple[Optional[float], Optional[float]]:
    """Exact distribution-free confidence interval of the median, or (None, None) if n is too small."""
    x = sorted(float(v) for v in samples)
    n = len(x)
    # In integers scaled by 2**n, exactly: floats overflow at 2.0 ** 1024 (more than 1023
    # samples, reached by long timed loops), and comb(n, l) is updated term by term.
    limit = Fraction((1.0 - confidence) / 2.0) * (1 << n)  # alpha * 2**n
    tail, term, l = 0, 1, 0  # term = comb(n, l)
    while l < n:
        nxt = tail + term  # P(Bin(n, 1/2) < l + 1) * 2**n
        if nxt > limit:
            break
        tail, term, l = nxt, term * (n - l) // (l + 1), l + 1
    if l == 0:
        return None, None
    return x[l - 1], x[n - l]


def summarize(samples_ms: Sequence[float], confidence: float = 0.95) -> StageStats:
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarize")
    a = np.asarray(samples_ms, dtype=float)
    p10, p25, p50, p75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    lo, hi = median_ci(a, confidence)
    rel = (hi - lo) / 2.0 / float(p50) if lo is not None and p50 > 0 else None
    return StageStats(median=float(p50), mean=float(a.mean()), p10=float(p10), p90=float(p90),
                      iqr=float(p75 - p25), std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
                      n=int(a.size), samples=[round(float(x), 6) for x in a], ci_low=lo, ci_high=hi, ci_rel=rel)


def step_stages(steps: Sequence[Sequence[float]], confidence: float = 0.95) -> Dict[str, StageStats]:
    """``tpot`` and ``itl`` from the raw step times of a stage (one list per iteration, ms).

    ``tpot``: one sample per iteration, the mean of its steps (vLLM's TPOT of one request:
    (E2E - TTFT) / (output tokens - 1)), so its median and interval are over iterations like
    every stage's. ``itl``: every step of every iteration, in order, kept raw (the record's
    ITL percentiles are computed from these samples).
    """
    per_iter = [float(np.mean(s)) for s in steps if len(s)]
    flat = [float(x) for s in steps for x in s]
    if not per_iter:
        return {}
    return {"tpot": summarize(per_iter, confidence), "itl": summarize(flat, confidence)}
