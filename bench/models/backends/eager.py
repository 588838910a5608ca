"""``backend=eager``: every stage as PyTorch runs it in-process, today's path (the default,
leaving records and point ids as they were)."""
from __future__ import annotations

from .base import BACKENDS, Backend


@BACKENDS.register("eager")
class Eager(Backend):
    name = "eager"
    can_run = ("preprocess", "vision_latency", "projector", "prefill", "decode")

    def problems(self, cfg):
        """``backend.stages`` is for the runtimes (a sweep over backends sets it for all of
        them); this backend runs every stage, and the record's ``pipeline`` says so."""
        return []
