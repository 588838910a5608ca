"""Test-only checkpoint helpers: write a VLM as a LLaVA-style checkpoint folder that
:func:`bench.models.checkpoint.load_checkpoint` reads, and a tiny offline tokenizer.

They live under tests/ because only tests (and tiny smoke checkpoints) make checkpoints; the
package itself only reads them. Every file goes through :mod:`bench.results.io`.
"""
from __future__ import annotations

import json
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch

from bench.models.checkpoint import LLAVA_PROJECTOR, LLAVA_TOWER, OWN_TOWER_PREFIX, SAFE_INDEX, PathLike
from bench.results.io import atomic_write_bytes, atomic_write_text


# ---- writing ---------------------------------------------------------------------------------
def vlm_state_dict(vlm) -> "OrderedDict[str, torch.Tensor]":
    """The VLM's weights under LLaVA names (this project's tower layout)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, v in vlm.llm.state_dict().items():
        out[k] = v
    if getattr(vlm.llm.config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)  # as Hugging Face saves tied models
    for k, v in vlm.projector.state_dict().items():
        out[LLAVA_PROJECTOR + k] = v
    for k, v in vlm.encoder.backbone.state_dict().items():
        out[LLAVA_TOWER + OWN_TOWER_PREFIX + k] = v
    return out


def save_checkpoint(vlm, path: PathLike, tokenizer=None, max_shard_bytes: Optional[int] = None,
                    projector: str = "mlp2x_gelu") -> Path:
    """Write ``vlm`` as a LLaVA-style checkpoint folder that :func:`load_checkpoint` reads.

    ``max_shard_bytes`` splits the weights into ``model-0000N-of-0000M.safetensors`` files
    with a ``model.safetensors.index.json``. ``tokenizer`` (a transformers tokenizer) is
    saved next to the weights. Save before ``prepare_for_inference`` to keep FastViT towers
    un-fused (a fused tower loads too, but only into another fused-capable build).
    """
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in vlm_state_dict(vlm).items()}
    cfg = vlm.llm.config.to_dict()
    cfg.update({
        "mm_projector_type": projector,
        "mm_hidden_size": int(vlm.encoder.channels),
        "mm_vision_tower": vlm.encoder_name,
        "image_size": int(vlm.resolution),
        "torch_dtype": str(vlm.dtype).replace("torch.", ""),
        "fastvlm_bench": {"encoder": vlm.encoder_name, "llm": vlm.llm_name, "resolution": int(vlm.resolution),
                          "projector": projector, "tower_layout": LLAVA_TOWER + OWN_TOWER_PREFIX + "<timm keys>"},
    })
    atomic_write_text(path / "config.json", json.dumps(cfg, indent=2, sort_keys=True, default=str))
    for old in list(path.glob("model*.safetensors")) + [path / SAFE_INDEX]:
        if old.exists():
            old.unlink()
    meta = {"format": "pt"}
    if not max_shard_bytes:
        atomic_write_bytes(path / "model.safetensors", save(state, metadata=meta))
    else:
        shards: List[Dict[str, torch.Tensor]] = [{}]
        size = 0
        for k, v in state.items():
            n = v.numel() * v.element_size()
            if shards[-1] and size + n > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][k] = v
            size += n
        weight_map = {}
        total = len(shards)
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{total:05d}.safetensors"
            atomic_write_bytes(path / name, save(shard, metadata=meta))
            weight_map.update({k: name for k in shard})
        index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
                 "weight_map": weight_map}
        atomic_write_text(path / SAFE_INDEX, json.dumps(index, indent=2))
    if tokenizer is not None:  # saved aside, then each file written through bench.results.io
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            for f in Path(tmp).iterdir():
                atomic_write_bytes(path / f.name, f.read_bytes())
    return path


# ---- tiny offline tokenizer (tests, smoke runs of tiny checkpoints) --------------------------
#: a ChatML template like Qwen2's, placing the image first in the user turn when given
CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def word_level_tokenizer(words: Iterable[str], chat_template: bool = True):
    """A word-level ``PreTrainedTokenizerFast`` built offline with the ``tokenizers`` library.

    Ids 0-3 are ``<pad> <s> </s> <unk>`` (the tiny test LLMs use bos=1, eos=2), then the ChatML
    markers and ``<image>``, then ``words``. Meant for tiny test checkpoints, not real models.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<image>"]
    vocab: Dict[str, int] = {}
    for w in specials + ["system", "user", "assistant"] + [w for w in words]:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", additional_special_tokens=specials[4:])
    if chat_template:
        tok.chat_template = CHATML_TEMPLATE
    return tok
