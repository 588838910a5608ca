"""A point's image and prompt, through the model's own processor.

The processor decides the tiles or patches (AnyRes for LLaVA-OneVision and LLaVA-NeXT,
``smart_resize`` between ``min_pixels`` and ``max_pixels`` for Qwen2.5-VL, image splitting at the
longest edge for SmolVLM, a fixed size for FastVLM and PaliGemma), so the point's
``visual_tokens`` is the processor's placeholder count: the image token's occurrences in
``input_ids``, which the model's forward fills one feature each (``visual_tokens_measured``
checks it).

SmolVLM (Idefics3) also wraps each tile's placeholders in tag tokens (``<fake_token_around_image>``,
``<row_r_col_c>``, ``<global-img>``); those are text the LLM reads but not image features, so
the record carries them apart (``hf_info.image_text_tokens``: placeholders plus tags).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from . import HFSource

#: Keys a processor returns that are not the model's inputs for a forward (PaliGemma's labels
#: would make the forward compute a loss).
_DROP = ("labels",)


def load_processor(source: HFSource, min_pixels: Optional[int], max_pixels: Optional[int]):
    """The folder's processor (offline), with Qwen2-VL-style pixel bounds applied when set."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(source.folder), local_files_only=True)
    ip = getattr(proc, "image_processor", None)
    if (min_pixels or max_pixels) and ip is not None:
        size = dict(getattr(ip, "size", None) or {})
        if not ({"shortest_edge", "longest_edge"} & set(size)) and not hasattr(ip, "min_pixels"):
            raise ValueError(f"{source.name}: its image processor ({type(ip).__name__}) has no min/max pixels "
                             "(min_pixels/max_pixels apply to Qwen2-VL-style processors)")
        if min_pixels:
            size["shortest_edge"] = int(min_pixels)
            if hasattr(ip, "min_pixels"):
                ip.min_pixels = int(min_pixels)
        if max_pixels:
            size["longest_edge"] = int(max_pixels)
            if hasattr(ip, "max_pixels"):
                ip.max_pixels = int(max_pixels)
        ip.size = size
    return proc


def prompt_text(source: HFSource, proc, prompt_tokens: int) -> str:
    """The image placeholder then ``prompt_tokens`` words: a shipped folder's word-level
    tokenizer makes each word one token; a user's folder uses its chat template when it has one
    (what the model is served with), else its processor's image token."""
    meta = source.meta()
    words = " ".join(f"w{1 + i % 199}" for i in range(prompt_tokens))
    if meta.get("image_token"):
        return f"{meta['image_token']} {words}"
    if getattr(proc, "chat_template", None):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": words}]}]
        return proc.apply_chat_template(msgs, add_generation_prompt=True)
    return f"{getattr(proc, 'image_token', '<image>')} {words}"


def make_inputs(proc, images, text: str, device: torch.device, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """The processor's tensors for a batch of images, on the device, pixels in the model's dtype."""
    out = proc(images=list(images), text=[text] * len(images), return_tensors="pt")
    inputs = {}
    for k, v in out.items():
        if k in _DROP or not torch.is_tensor(v):
            continue
        v = v.to(device)
        if v.is_floating_point():
            v = v.to(dtype)
        inputs[k] = v
    return inputs


def token_counts(proc, inputs: Dict[str, torch.Tensor], image_token_id: int, image_wh: Tuple[int, int]) -> Dict:
    """Per image: the placeholder count, the sequence length, the text tokens, and the
    processor's own multimodal count where it has one (SmolVLM's includes its tag tokens)."""
    ids = inputs["input_ids"][0]
    placeholders = int((ids == image_token_id).sum())
    out = {"placeholders": placeholders, "sequence_tokens": int(ids.numel()),
           "text_tokens": int(ids.numel()) - placeholders, "image_text_tokens": None}
    fn = getattr(proc, "_get_num_multimodal_tokens", None)
    if fn is not None:
        try:
            mm = fn(image_sizes=[(image_wh[1], image_wh[0])])
            n = (mm.get("num_image_tokens") if isinstance(mm, dict) else getattr(mm, "num_image_tokens", None))
            if n:
                out["image_text_tokens"] = int(n[0])
        except Exception:  # a processor without the helper's arguments: the placeholder count stands
            pass
    return out
