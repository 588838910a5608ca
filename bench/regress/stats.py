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
*within* a pair is what is compared: resample the pairs, within each pair resample both runs'
iterations, and take the median of the pairs' ratios. The drift then cancels instead of
widening the interval. Seeded: same inputs, same answer.
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


def paired_ratio_ci(pairs: Sequence[Tuple[Sequence[float], Sequence[float]]], n_resamples: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> Tuple[float, float, float]:
    """``candidate / base`` from runs measured in pairs: the median over pairs of each pair's
    ratio of medians, with a bootstrap over pairs and over iterations within each run.

    Returns ``(point, low, high)``; raises ``ValueError`` like :func:`ratio_ci`.
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
    point = float(np.median([np.median(y) / np.median(x) for x, y in zip(b, c)]))
    rng = np.random.default_rng(seed)
    k = len(pairs)
    # per pair: bootstrap distribution of its ratio of medians
    per_pair = np.vstack([_side_medians([y], n_resamples, rng) / _side_medians([x], n_resamples, rng)
                          for x, y in zip(b, c)])
    if k == 1:
        ratios = per_pair[0]
    else:
        pick = rng.integers(0, k, size=(n_resamples, k))
        ratios = np.median(per_pair[pick, np.arange(n_resamples)[:, None]], axis=1)
    return _interval(ratios, point, confidence)


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
