"""Load and save local LLaVA-style VLM checkpoints (the layout of the LLaVA / FastVLM releases).

A checkpoint is a folder::

    config.json                         the LLM's config plus LLaVA's ``mm_*`` keys
    tokenizer.json, tokenizer_config.json, ...   (optional; read by AutoTokenizer)
    model.safetensors                   or sharded: model-0000N-of-0000M.safetensors +
                                        model.safetensors.index.json
                                        (or pytorch_model.bin / pytorch_model-*.bin [+ .index.json])

Weight names:

``model.*``, ``lm_head.*``
    the LLM with Hugging Face Qwen2 / Llama names (``lm_head.weight`` may be absent when the
    embeddings are tied).
``model.mm_projector.{0,2}.{weight,bias}``
    the ``mlp2x_gelu`` projector (``bench.models.projector``).
``model.vision_tower.<tower prefix><timm keys>``
    the vision tower. Tower prefixes understood:

    * ``backbone.`` -- this project's own layout (what the tests' ``save_checkpoint`` writes): the
      rest of the key is the timm module name of ``VisionEncoder.backbone`` (e.g.
      ``model.vision_tower.backbone.blocks.0.attn.qkv.weight``; ConvLLaVA's extra stage is
      ``model.vision_tower.backbone.stage5.*``).
    * ``vision_tower.model.`` -- FastVLM's MobileCLIP tower (``fastvithd``/``fastvit``): keys in
      MobileCLIP's original names (``patch_embed``, ``network.N``, ``conv_exp``, ...) are
      renamed to timm's ``fastvit_mci*`` names with timm's own converter; keys already in timm
      names are taken as they are. The tower's CLIP head (``head.*``) is not part of the VLM
      and is dropped.

FastViT/MobileOne towers are saved and loaded *un-fused* (``build_vlm`` loads the checkpoint
before ``prepare_for_inference`` fuses the branches). A checkpoint that holds an already
fused tower (``reparam_conv`` keys) is also accepted: the freshly built tower is fused first.

ViT position embeddings stored for another grid (a checkpoint trained at 336 px loaded at
448 px) are resampled with timm's ``resample_abs_pos_embed``. Loading is strict: missing,
unexpected or wrongly shaped weights raise :class:`CheckpointError` naming a few of them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Tuple, Union

import torch
from torch import nn

from .encoders.base import load_timm

PathLike = Union[str, Path]

LLAVA_TOWER = "model.vision_tower."
LLAVA_PROJECTOR = "model.mm_projector."
OWN_TOWER_PREFIX = "backbone."
MOBILECLIP_TOWER_PREFIX = "vision_tower.model."
SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
#: harmless keys older transformers versions saved and newer ones recompute
_IGNORED_LLM_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(RuntimeError):
    """A checkpoint folder cannot be loaded into the VLM (missing files, keys or shapes)."""


# ---- reading ---------------------------------------------------------------------------------
def _weight_files(folder: Path) -> List[Path]:
    for index_name in (SAFE_INDEX, BIN_INDEX):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a valid shard index ({exc})") from exc
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(f"{index} lists shard(s) that are not in {folder}: {absent[:5]}")
            return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    files = sorted(folder.glob("pytorch_model*.bin"))
    if files:
        return files
    raise CheckpointError(
        f"no weights in {folder}: expected model.safetensors, sharded *.safetensors with {SAFE_INDEX}, "
        f"or pytorch_model*.bin")


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (or of one weights file), on the CPU."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    files = _weight_files(path) if path.is_dir() else [path]
    state: Dict[str, torch.Tensor] = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(str(f), device="cpu")
            else:
                part = torch.load(str(f), map_location="cpu", weights_only=True)
                part = part.get("state_dict", part) if isinstance(part, dict) else part
        except Exception as exc:  # corrupt or truncated file
            raise CheckpointError(f"cannot read weights file {f}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(part, dict):
            raise CheckpointError(f"{f} does not hold a state dict")
        state.update(part)
    return state


def read_config(path: PathLike) -> dict:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return {}
    try:
        return json.loads(cfg.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg}: invalid JSON ({exc})") from exc


# ---- key mapping -----------------------------------------------------------------------------
def split_llava_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[dict, dict, dict]:
    """``(tower, projector, llm)`` state dicts: tower keys keep their tower prefix."""
    tower, proj, llm = {}, {}, {}
    for k, v in state.items():
        if k.startswith(LLAVA_TOWER):
            tower[k[len(LLAVA_TOWER):]] = v
        elif k.startswith(LLAVA_PROJECTOR):
            proj[k[len(LLAVA_PROJECTOR):]] = v
        else:
            llm[k] = v
    return tower, proj, llm


def _tower_to_timm(tower: Dict[str, torch.Tensor], backbone: nn.Module) -> Dict[str, torch.Tensor]:
    """Strip the tower prefix and rename to the timm names of ``backbone``."""
    if not tower:
        return {}
    if all(k.startswith(OWN_TOWER_PREFIX) for k in tower):
        return {k[len(OWN_TOWER_PREFIX):]: v for k, v in tower.items()}
    if all(k.startswith(MOBILECLIP_TOWER_PREFIX) for k in tower):
        sd = {k[len(MOBILECLIP_TOWER_PREFIX):]: v for k, v in tower.items()}
        load_timm()
        from timm.models.fastvit import FastVit, checkpoint_filter_fn

        if isinstance(backbone, FastVit):
            sd = checkpoint_filter_fn(sd, backbone)
        own = backbone.state_dict()
        if not any(k.startswith("head.") for k in own):
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        return sd
    prefixes = sorted({k.split(".", 1)[0] + "." for k in tower})
    raise CheckpointError(
        f"unrecognised vision tower layout: keys under '{LLAVA_TOWER}' start with {prefixes[:5]}; "
        f"supported: '{LLAVA_TOWER}{OWN_TOWER_PREFIX}<timm keys>' (this project) and "
        f"'{LLAVA_TOWER}{MOBILECLIP_TOWER_PREFIX}<keys>' (FastVLM MobileCLIP)")


def _resample_pos_embed(sd: Dict[str, torch.Tensor], backbone: nn.Module) -> List[str]:
    """Resample a ViT's ``pos_embed`` to the backbone's grid; returns notes on what changed."""
    notes: List[str] = []
    own = getattr(backbone, "pos_embed", None)
    if "pos_embed" not in sd or not isinstance(own, torch.Tensor) or sd["pos_embed"].shape == own.shape:
        return notes
    load_timm()
    from timm.layers import resample_abs_pos_embed

    src = sd["pos_embed"]
    prefix = 0 if getattr(backbone, "no_embed_class", False) else int(getattr(backbone, "num_prefix_tokens", 0))
    old_tokens = src.shape[1] - prefix
    old_side = int(round(math.sqrt(old_tokens)))
    if src.dim() != 3 or old_side * old_side != old_tokens or src.shape[-1] != own.shape[-1]:
        raise CheckpointError(
            f"vision tower pos_embed has shape {tuple(src.shape)}, cannot resample to {tuple(own.shape)}")
    new_size = tuple(backbone.patch_embed.grid_size)
    sd["pos_embed"] = resample_abs_pos_embed(src.float(), new_size=list(new_size), old_size=[old_side, old_side],
                                             num_prefix_tokens=prefix, verbose=False).to(src.dtype)
    notes.append(f"pos_embed resampled from {old_side}x{old_side} to {new_size[0]}x{new_size[1]}")
    return notes


def _is_fused(keys: Iterable[str]) -> bool:
    return any(".reparam_conv." in k or k.startswith("reparam_conv.") for k in keys)


def _examples(keys: Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _check_part(module: nn.Module, sd: Dict[str, torch.Tensor], where: str, prefix_in_file: str,
                allow_missing: Iterable[str] = ()) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, wrong-shape) keys of ``sd`` against ``module``, as named in the file."""
    own = module.state_dict()
    allow = set(allow_missing)
    missing = [k for k in own if k not in sd and k not in allow]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{prefix_in_file}{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)} ({where})"
             for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    return ([prefix_in_file + k for k in missing], [prefix_in_file + k for k in unexpected], shape)


@torch.no_grad()
def load_checkpoint(vlm, path: PathLike) -> List[str]:
    """Load the LLaVA-style checkpoint at ``path`` into ``vlm`` (strictly); returns notes.

    Raises :class:`CheckpointError` if any model weight is missing from the checkpoint, the
    checkpoint has weights the model lacks, or shapes differ (after position-embedding
    resampling) -- naming a few of the offending keys.
    """
    path = Path(path)
    state = read_state_dict(path)
    cfg = read_config(path) if path.is_dir() else {}
    tower_raw, proj_sd, llm_sd = split_llava_state_dict(state)
    backbone = vlm.encoder.backbone
    tower_sd = _tower_to_timm(tower_raw, backbone)
    notes = _resample_pos_embed(tower_sd, backbone)
    if _is_fused(tower_sd) and not _is_fused(backbone.state_dict()) and vlm.encoder.spec.reparameterize:
        encoder = vlm.encoder
        encoder.prepare_for_inference()  # idempotent: build_vlm's later call is a no-op
        backbone = encoder.backbone
        notes.append("checkpoint holds a fused (re-parameterised) tower: fused the model's tower first")
    llm_sd = {k: v for k, v in llm_sd.items() if not k.endswith(_IGNORED_LLM_SUFFIXES)}
    tied = bool(getattr(vlm.llm.config, "tie_word_embeddings", False))
    allow_llm = ["lm_head.weight"] if tied else []

    tower_prefix = LLAVA_TOWER + (MOBILECLIP_TOWER_PREFIX if tower_raw and all(
        k.startswith(MOBILECLIP_TOWER_PREFIX) for k in tower_raw) else OWN_TOWER_PREFIX)
    parts = [(backbone, tower_sd), (vlm.projector, proj_sd), (vlm.llm, llm_sd)]
    problems = [
        _check_part(backbone, tower_sd, "vision tower", tower_prefix),
        _check_part(vlm.projector, proj_sd, "projector", LLAVA_PROJECTOR),
        _check_part(vlm.llm, llm_sd, "LLM", "", allow_missing=allow_llm),
    ]
    missing = [k for p in problems for k in p[0]]
    unexpected = [k for p in problems for k in p[1]]
    shapes = [k for p in problems for k in p[2]]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {path} does not match {vlm.encoder_name}@{vlm.resolution}+{vlm.llm_name}"
                 + (f" (checkpoint config: {cfg.get('fastvlm_bench')})" if cfg.get("fastvlm_bench") else "") + ":"]
        if missing:
            lines.append(f"  {len(missing)} missing key(s): {_examples(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected key(s): {_examples(unexpected)}")
        if shapes:
            lines.append(f"  {len(shapes)} shape mismatch(es): {_examples(shapes, 3)}")
        raise CheckpointError("\n".join(lines))
    for module, sd in parts:  # nothing is copied unless every part matches
        module.load_state_dict(sd, strict=False)
    if tied:
        vlm.llm.tie_weights()
    return notes


def load_tokenizer(path: PathLike):
    """The tokenizer saved in a checkpoint folder, from local files only.

    ``AutoTokenizer`` (transformers 5) picks the tokenizer class from ``config.json``'s
    ``model_type`` (Qwen2Tokenizer for a Qwen2 LLM) even when ``tokenizer_config.json`` names
    a generic fast tokenizer -- which would re-interpret a non-BPE ``tokenizer.json`` wrongly.
    A generic class (``TokenizersBackend`` / ``PreTrainedTokenizerFast``) is therefore loaded
    as such; every other class goes through ``AutoTokenizer``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"tokenizer folder {path} does not exist")
    cfg_file = path / "tokenizer_config.json"
    cls = None
    if cfg_file.is_file():
        try:
            cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
        except ValueError as exc:
            raise CheckpointError(f"{cfg_file}: invalid JSON ({exc})") from exc
    if cls in ("TokenizersBackend", "PreTrainedTokenizerFast") and (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
