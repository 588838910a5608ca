"""The stage split of a transformers VLM's own ``forward``, marked by module hooks.

Why hooks: TTFT must be the model's own ``forward`` end to end (not a sum of stage calls we
would re-implement), and the stages must come from inside that same call. A forward pre-hook
and a forward hook on each part open and close the timer's stages
(:meth:`~bench.measure.timer.StageTimer.begin` / ``end``):

- ``vision_latency``: the vision tower (for Qwen2.5-VL ``visual`` up to its ``merger``);
- ``projector``: ``multi_modal_projector`` / ``connector`` (Qwen2.5-VL: ``merger`` and the rest
  of ``visual``, which puts the merged windows back in order);
- ``merge``: from the projector's end to the language model's start: the model's packing of the
  features (LLaVA-OneVision's unpad, newline tokens and ``anyres_max_9`` shrink), the
  placeholder mask, ``masked_scatter`` into the text embeddings, position ids (Qwen's M-RoPE);
- ``prefill``: the language model over the merged embeddings, the LM head on the last position
  (``logits_to_keep=1``), the argmax and the first token id on the host (closed by the caller).

The hooks are armed for one forward (the TTFT one) and disarm at the language model's start,
so decode steps, which run the same modules, mark nothing but their own steps.
"""
from __future__ import annotations

from typing import Callable, List

from .model import Parts


class StageHooks:
    """Hooks on ``parts`` that call ``begin(name)`` / ``end(name)``; :meth:`arm` before the
    forward that is timed, :meth:`remove` when the point is done."""

    def __init__(self, parts: Parts, begin: Callable[[str], None], end: Callable[[str], None]):
        self.begin, self.end = begin, end
        self.armed = False
        self._handles: List = []
        v, p = parts.vision, parts.projector
        self._hook(v, pre=lambda: self.begin("vision_latency"),
                   post=(lambda: (self.end("projector"), self.begin("merge"))) if parts.projector_in_vision
                   else (lambda: self.end("vision_latency")))
        if p is not None and parts.projector_in_vision:
            self._hook(p, pre=lambda: (self.end("vision_latency"), self.begin("projector")), post=None)
        elif p is not None:
            self._hook(p, pre=lambda: self.begin("projector"),
                       post=lambda: (self.end("projector"), self.begin("merge")))
        self._hook(parts.language_model, pre=self._lm_start, post=None)

    def _hook(self, module, pre, post) -> None:
        """A pre-hook and a hook that act only while armed and return None (a pre-hook that
        returns a value would replace the module's input)."""
        def pre_hook(_module, _args):
            if self.armed:
                pre()

        def post_hook(_module, _args, _out):
            if self.armed:
                post()

        if pre is not None:
            self._handles.append(module.register_forward_pre_hook(pre_hook))
        if post is not None:
            self._handles.append(module.register_forward_hook(post_hook))

    def _lm_start(self) -> None:
        self.end("merge")
        self.begin("prefill")
        self.armed = False  # decode steps run the language model again: not stages of this forward

    def arm(self) -> None:
        self.armed = True

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
