"""Timing: a model-agnostic stage timer, statistics, FLOP counting and device trackers."""
from .stats import summarize
from .timer import StageTimer, TimingResult

__all__ = ["StageTimer", "TimingResult", "summarize"]
