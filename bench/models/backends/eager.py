"""``backend=eager``: every stage as PyTorch runs it in-process, today's path (the default,
leaving records and point ids as they were)."""
from __future__ import annotations

from .base import BACKENDS, Backend


@BACKENDS.register("eager")
class Eager(Backend):
    name = "eager"
    can_run = ("preprocess", "vision_latency", "projector", "prefill", "decode")

    def problems(self, cfg):
        return [] if not cfg.backend.stages else ["backend eager runs every stage; backend.stages is for a runtime"]
