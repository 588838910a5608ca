"""What compare and the gate compare, and how large a change must be to count: the metrics
(their columns, samples and units), the default thresholds and the noise floors.

A module of its own because both the comparison (:mod:`.compare`) and its rendering
(:mod:`.render`, which states the noise-floor rule in every report) need the same numbers;
with them inside ``compare`` the two modules imported each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

DEFAULT_THRESHOLD = 0.03
DEFAULT_NOISE_FLOOR = 0.01  # both sides hold >= 2 runs (or interleaved pairs) of the point
#: One interleaved pair: the drift is shared, but two processes of one configuration still
#: differ, which one pair cannot show. Measured on this project's 2-core VMs: vision-latency
#: ratios of A/A pairs had an sd of 1.8 % (FastViTHD, 18 pairs) and 2.1 % (tiny models pinned
#: to one core, 22 pairs; prefill 2.5 %, worst pair 0.938). At a 2 % floor 2 of 12 tiny A/A
#: pairs were flagged; 5 % is about 2.5 sd, plus the pair's own interval.
PAIR_NOISE_FLOOR = 0.05
#: A side with a single run: the drift between runs of the same configuration on this
#: project's 2-core machines (docs/compare-gate.md, "What compare can see").
SINGLE_RUN_NOISE_FLOOR = 0.08


@dataclass(frozen=True)
class MetricSpec:
    """One compared quantity: the columns holding it (first present pair wins) and samples."""

    name: str
    columns: Tuple[str, ...]
    samples: Optional[str] = None
    unit: str = "ms"
    lower_is_better: bool = True


METRICS: Dict[str, MetricSpec] = {
    "vision_latency": MetricSpec("vision_latency", ("vision_latency_ms",), "vision_latency_samples_ms"),
    "prefill": MetricSpec("prefill", ("prefill_ms",), "prefill_samples_ms"),
    "ttft": MetricSpec("ttft", ("ttft_ms",), "ttft_samples_ms"),
    "visual_tokens": MetricSpec("visual_tokens", ("visual_tokens_measured", "visual_tokens"), None, "tokens"),
    "peak_memory": MetricSpec("peak_memory", ("peak_memory_mb", "peak_rss_mb"), None, "MB"),
    # not compared by default, available through --metrics
    "preprocess": MetricSpec("preprocess", ("preprocess_ms",), "preprocess_samples_ms"),
    "projector": MetricSpec("projector", ("projector_ms",), "projector_samples_ms"),
    "merge": MetricSpec("merge", ("merge_ms",), "merge_samples_ms"),  # tiled points only
    # with decode_tokens (bench.models.decode): per-iteration samples like the stages above
    "tpot": MetricSpec("tpot", ("tpot_ms",), "tpot_samples_ms"),
    "e2e": MetricSpec("e2e", ("e2e_ms",), "e2e_samples_ms"),
    "ttst": MetricSpec("ttst", ("ttst_ms",), "ttst_samples_ms"),
    "decode": MetricSpec("decode", ("decode_ms",), "decode_samples_ms"),
}
DEFAULT_METRICS: Tuple[str, ...] = ("vision_latency", "prefill", "ttft", "visual_tokens", "peak_memory")
#: Default thresholds per metric where the global one does not fit: peak RSS on a CPU differs by
#: up to 3.7 % between runs of one configuration (allocator caching), and it has no interval.
DEFAULT_METRIC_THRESHOLDS: Dict[str, float] = {"peak_memory": 0.10}
SPEEDUP_METRICS: Tuple[str, ...] = ("vision_latency", "ttft")


def point_noise_floor(runs_base: int, runs_candidate: int, paired: bool) -> float:
    """The default noise floor of a point: 1 % when the interval can see run-to-run drift (both
    sides hold several runs or pairs of the point), :data:`PAIR_NOISE_FLOOR` for one interleaved
    pair (the drift is shared, the process-to-process difference is not visible), else the
    single-run floor."""
    if min(runs_base, runs_candidate) >= 2:
        return DEFAULT_NOISE_FLOOR
    return PAIR_NOISE_FLOOR if paired else SINGLE_RUN_NOISE_FLOOR


#: How the default noise floor is chosen, in words (for reports).
NOISE_FLOOR_RULE = (f"{DEFAULT_NOISE_FLOOR * 100:g} % with several runs per side, {PAIR_NOISE_FLOOR * 100:g} % for "
                    f"one interleaved pair, {SINGLE_RUN_NOISE_FLOOR * 100:g} % for single runs made at different "
                    "times: their intervals cannot show run-to-run drift")
