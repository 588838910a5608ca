"""Build a transformers VLM for a point: transformers' own class, placeholder or real weights.

Why not ``accelerate``'s ``init_empty_weights`` + ``to_empty``: ``to_empty`` unties tied weights
(LLaVA-OneVision-0.5B then counts 1,029.9 M parameters instead of 893.7 M: the input embedding
and the LM head become two tables) and leaves non-persistent buffers (rotary ``inv_freq``,
SigLIP's ``position_ids``) uninitialised. We build under :func:`~bench.models.materialize.meta_parameters`
(matrices on meta, vectors and buffers real, as the module initialised them) and fill the
matrices with :func:`~bench.models.materialize.materialize`, which keeps tied parameters tied:
the same path as our composed points, so both sides of a fidelity pair get the same kind of
placeholder values.

A folder with ``*.safetensors`` loads its real weights through transformers' own
``from_pretrained`` (``local_files_only``): the deployed model, as the user runs it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from ..materialize import count_parameters, materialize, meta_parameters
from . import HFSource, HFSourceError, check_config

#: Where each part lives on ``model.model`` in the families transformers 5.2x has: the first
#: attribute found wins. Qwen2.5-VL's projector (``merger``) is a child of its vision tower.
VISION_ATTRS = ("vision_tower", "visual", "vision_model")
PROJECTOR_ATTRS = ("multi_modal_projector", "connector")
LM_ATTRS = ("language_model", "text_model")


@dataclass
class Parts:
    """The modules the stage hooks attach to (``bench.models.hf.stages``)."""

    vision: nn.Module
    projector: Optional[nn.Module]
    language_model: nn.Module
    projector_in_vision: bool  # Qwen2.5-VL: ``visual.merger``

    def counts(self, model: nn.Module) -> Dict[str, int]:
        """Parameters per part, as the record's ``params`` (vision, projector, llm); the LM head
        counts with the LLM (tied or not), the rest of the model (an image-newline vector) too."""
        vision = count_parameters(self.vision)
        proj = count_parameters(self.projector) if self.projector is not None else 0
        if self.projector_in_vision:
            vision -= proj
        total = count_parameters(model)
        return {"vision": vision, "projector": proj, "llm": total - vision - proj}


def find_parts(model: nn.Module) -> Parts:
    base = getattr(model, "model", model)

    def first(attrs, where=base):
        for a in attrs:
            m = getattr(where, a, None)
            if isinstance(m, nn.Module):
                return m
        return None

    vision, lm = first(VISION_ATTRS), first(LM_ATTRS)
    if vision is None or lm is None:
        raise HFSourceError(f"{type(model).__name__}: no vision tower ({'/'.join(VISION_ATTRS)}) or language model "
                            f"({'/'.join(LM_ATTRS)}) found to mark the stages")
    proj = first(PROJECTOR_ATTRS)
    inside = False
    if proj is None and isinstance(getattr(vision, "merger", None), nn.Module):
        proj, inside = vision.merger, True
    return Parts(vision, proj, lm, inside)


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def kv_bytes_per_token(config, element_size: int) -> int:
    """KV-cache bytes one position costs: 2 x layers x KV heads x head dim x element size."""
    t = text_config(config)
    heads = int(getattr(t, "num_attention_heads"))
    kv = int(getattr(t, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(t, "head_dim", None) or t.hidden_size // heads)
    return 2 * int(t.num_hidden_layers) * kv * head_dim * element_size


def working_set_bytes(config, sequence: int, batch: int, element_size: int) -> Dict[str, int]:
    """An estimate of one iteration's memory apart from the parameters: the KV cache of the whole
    sequence and the widest activation of the prefill (sequence x the MLP's width, four live at
    once), per batch. An estimate, said as one in the skip message."""
    t = text_config(config)
    width = int(getattr(t, "intermediate_size", 0) or 4 * t.hidden_size)
    return {"kv_cache": batch * sequence * kv_bytes_per_token(config, element_size),
            "activations": 4 * batch * sequence * width * element_size}


def build_model(source: HFSource, device: torch.device, dtype: torch.dtype, attn: str, available: int,
                headroom: float, sequence: int, batch: int, insufficient, checked=None):
    """``(model, config, parts, build_s)``; raises ``insufficient(message)`` before allocating
    when parameters + working set (x ``headroom``) exceed ``available`` bytes. ``checked``:
    ``(config, model class)`` already read and checked (a point's plan); read here when None."""
    t0 = time.perf_counter()
    config, cls = checked or check_config(source)
    with torch.random.fork_rng(devices=[]), meta_parameters():
        torch.manual_seed(0)  # vectors a module initialises itself: the same model in every process
        model = cls._from_config(config, attn_implementation=attn, dtype=dtype)
    elem = torch.empty((), dtype=dtype).element_size()
    params = count_parameters(model) * elem
    work = working_set_bytes(config, sequence, batch, elem)
    need = params + sum(work.values())
    if need * headroom > available:
        gib = lambda x: f"{x / 2**30:.3g}"  # noqa: E731
        raise insufficient(f"{source.name} ({config.model_type}) at batch {batch} needs ~{gib(need * headroom)} GiB "
                           f"in {str(dtype).replace('torch.', '')} on {device} (parameters {gib(params)} + KV cache "
                           f"{gib(work['kv_cache'])} + activations ~{gib(work['activations'])} GiB for {sequence} "
                           f"positions, x{headroom:g} headroom), only {gib(available)} GiB available")
    if source.weights:
        del model
        model = cls.from_pretrained(str(source.folder), local_files_only=True, dtype=dtype,
                                    attn_implementation=attn).to(device)
    else:
        materialize(model, device, dtype)
    model.eval()
    return model, config, find_parts(model), time.perf_counter() - t0
