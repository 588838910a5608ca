"""Statistics shared by ``compare`` and ``gate``: the interval of a ratio of medians.

Within one run, iterations are not independent draws (they share a process, its memory
layout, thread placement and the machine's state), and between two runs of the same
configuration the median itself moves by a percent or so. A bootstrap over iterations alone
ignores that and calls run-to-run drift a regression. So the resampling is hierarchical:

1. resample the *runs* of a side with replacement (when a side has several runs of a point);
2. within each drawn run, resample its iterations with replacement;
3. the side's statistic is the median of the drawn runs' medians.

With one run per side only step 2 remains, and the interval says nothing about run-to-run
drift: that is what ``noise_floor`` in :func:`verdict` is for.

Paired runs (:func:`paired_ratio_ci`): when each base run was measured at the same time as one
candidate run, in turns (``timing.turns``), the two share the machine's drift, and the ratio
*within* a pair is what is compared; the drift then cancels instead of widening the interval.
What does not cancel is the difference between two processes of one configuration (memory
layout, cores): a random effect per pair. With one pair it is invisible (the compare noise
floor covers it); with several, the interval is Student's t over the pairs' log-ratios, the
between-execution interval of Kalibera & Jones, "Rigorous Benchmarking in Reasonable Time"
(ISMM 2013), widened where needed to the within-run bootstrap interval. A bootstrap over
2-5 pairs would be too narrow: it cannot draw a spread wider than the pairs it has.
Seeded: same inputs, same answer.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

REGRESSION, IMPROVEMENT, UNCHANGED, UNDEFINED = "regression", "improvement", "unchanged", "undefined"


def _side_medians(runs: Sequence[np.ndarray], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution of a side's median-of-run-medians."""
    k = len(runs)
    per_run = np.empty((k, n_resamples))
    for j, x in enumerate(runs):
        n = x.size
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            per_run[j, start:stop] = np.median(x[rng.integers(0, n, size=(stop - start, n))], axis=1)
    if k == 1:
        return per_run[0]
    pick = rng.integers(0, k, size=(n_resamples, k))  # runs drawn with replacement
    return np.median(per_run[pick, np.arange(n_resamples)[:, None]], axis=1)


def _clean(runs: Sequence[Sequence[float]], side: str) -> list:
    out = [np.asarray(list(r), dtype=float) for r in runs if len(r)]
    if not out:
        raise ValueError(f"{side}: no samples")
    if not all(np.all(np.isfinite(r)) for r in out):
        raise ValueError(f"{side}: samples must be finite numbers")
    return out


def _check(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")


def _interval(ratios: np.ndarray, point: float, confidence: float) -> Tuple[float, float, float]:
    """``(point, low, high)``: the percentile interval of the bootstrap ratios, widened to hold
    the point."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return point, float(min(low, point)), float(max(high, point))


def ratio_ci(base_runs: Sequence[Sequence[float]], cand_runs: Sequence[Sequence[float]], n_resamples: int = 2000,
             confidence: float = 0.95, seed: int = 0) -> Tuple[float, float, float]:
    """``candidate / base`` of the median-of-run-medians, with a hierarchical bootstrap interval.

    Returns ``(point, low, high)``. Raises ``ValueError`` for empty or non-finite samples, a
    non-positive base, or a bad confidence.
    """
    b, c = _clean(base_runs, "base"), _clean(cand_runs, "candidate")
    _check(confidence, n_resamples)
    base_point = float(np.median([np.median(r) for r in b]))
    if base_point <= 0:
        raise ValueError(f"base median must be positive, got {base_point}")
    point = float(np.median([np.median(r) for r in c])) / base_point
    rng = np.random.default_rng(seed)
    mb, mc = _side_medians(b, n_resamples, rng), _side_medians(c, n_resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mc / mb
    return _interval(ratios, point, confidence)


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``df`` degrees of freedom: the
    density integrated (Simpson, 4000 panels) and the integral inverted by bisection. Accurate to
    about 1e-6 for the confidences used here; no SciPy in the runtime lock for one number."""
    if not 0.5 <= p < 1.0 or df < 1:
        raise ValueError(f"need 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf_above_half(x: float) -> float:  # P(0 < T < x)
        u = np.linspace(0.0, math.atan(x), 4001)  # t = tan(u): a finite range even for df = 1
        t = np.tan(u)
        f = c * (1 + t * t / df) ** (-(df + 1) / 2) / np.cos(u) ** 2
        h = u[1] - u[0]
        return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))

    lo, hi = 0.0, 1.0
    while cdf_above_half(hi) < p - 0.5:
        hi *= 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf_above_half(mid) < p - 0.5 else (lo, mid)
    return (lo + hi) / 2


def paired_ratio_ci(pairs: Sequence[Tuple[Sequence[float], Sequence[float]]], n_resamples: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> Tuple[float, float, float]:
    """``candidate / base`` from runs measured in pairs: the geometric mean over pairs of each
    pair's ratio of medians.

    The interval: one pair, the bootstrap over both runs' iterations; several pairs, the wider
    of Student's t interval over the pairs' log-ratios (k - 1 degrees of freedom) and the
    bootstrap over iterations within every pair. Returns ``(point, low, high)``; raises
    ``ValueError`` like :func:`ratio_ci`.
    """
    if not pairs:
        raise ValueError("no pairs")
    _check(confidence, n_resamples)
    b = _clean([x for x, _ in pairs], "base")
    c = _clean([y for _, y in pairs], "candidate")
    if len(b) != len(pairs) or len(c) != len(pairs):
        raise ValueError("every pair needs samples on both sides")
    if min(float(np.median(x)) for x in b) <= 0:
        raise ValueError("base median must be positive")
    if min(float(np.median(y)) for y in c) <= 0:
        raise ValueError("candidate median must be positive (the ratio is taken on a log scale)")
    logs = np.log([float(np.median(y)) / float(np.median(x)) for x, y in zip(b, c)])
    point = float(np.exp(logs.mean()))
    rng = np.random.default_rng(seed)
    # within-run noise: the bootstrap of the mean log-ratio, pairs held fixed
    with np.errstate(divide="ignore", invalid="ignore"):
        per_pair = np.vstack([np.log(_side_medians([y], n_resamples, rng) / _side_medians([x], n_resamples, rng))
                              for x, y in zip(b, c)])
    _, low, high = _interval(np.exp(per_pair.mean(axis=0)), point, confidence)
    k = len(pairs)
    if k >= 2:  # between pairs: the spread of the pairs themselves
        half = student_t_quantile(0.5 + confidence / 2.0, k - 1) * float(logs.std(ddof=1)) / math.sqrt(k)
        low, high = min(low, float(np.exp(logs.mean() - half))), max(high, float(np.exp(logs.mean() + half)))
    return point, low, high


def verdict(point: Optional[float], low: Optional[float], high: Optional[float], threshold: float,
            noise_floor: float = 0.0, lower_is_better: bool = True) -> str:
    """``regression`` when the ratio is worse than ``1 + threshold`` AND its interval excludes
    ``1 +- noise_floor`` on the bad side; ``improvement`` symmetrically; else ``unchanged``.

    The point must clear the threshold (an effect worth reporting) and the interval must clear
    the noise floor (an effect that is not run-to-run drift or sampling noise).
    """
    if None in (point, low, high) or not all(math.isfinite(v) for v in (point, low, high)):
        return UNDEFINED
    up = point > 1.0 + threshold and low > 1.0 + noise_floor
    down = point < 1.0 - threshold and high < 1.0 - noise_floor
    worse, better = (up, down) if lower_is_better else (down, up)
    return REGRESSION if worse else IMPROVEMENT if better else UNCHANGED
