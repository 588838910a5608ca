"""transformers VLMs as sweep points: ``hf=NAME`` (a shipped folder) or ``hf=PATH`` (yours).

Why: our composed points (an encoder from ``encoders/``, the LLaVA-1.5 projector, an LLM from
``llms.py``) reproduce the paper's tables, but users deploy a transformers model (LLaVA-OneVision,
Qwen2.5-VL, SmolVLM, FastVLM ...) and ask for *its* vision / projector / prefill / TTFT split
across image sizes. Such a point is built by transformers' own ``AutoModelForImageTextToText``
class for the folder's ``config.json`` (never a copy of its code), its images go through the
model's own processor, and the stages are marked by hooks inside the model's own ``forward``
(:mod:`.stages`).

A source is a folder with ``config.json`` and the processor's files: one of the shipped folders
in ``bench/data/hf/`` (published config values, a word-level tokenizer with the real
special-token ids, no weights; written by ``scripts/make_hf_systems.py``) or a local model
folder. Weights load when the folder has ``*.safetensors``; otherwise they are placeholders.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

SHIPPED_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "hf"

#: Files that decide what a folder builds and how its images are processed: hashed into the
#: point id (with the weights' names, sizes and mtimes), so an edited folder is a new point.
_CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json",
                 "tokenizer.json", "fastvlm_bench.json", "chat_template.json")


class HFSourceError(ValueError):
    """A source that cannot be a point (no folder, no config.json, not image-text-to-text)."""


def shipped_names() -> List[str]:
    """The shipped systems (``fastvlm-bench list``), one folder each in ``bench/data/hf/``."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file()) \
        if SHIPPED_DIR.is_dir() else []


@dataclass(frozen=True)
class HFSource:
    """Where a point's model comes from: its name in records and labels, its folder, whether it
    is shipped (placeholder weights by design) and a fingerprint of what it builds."""

    name: str
    folder: Path
    shipped: bool
    fingerprint: str
    weights: bool  # the folder has *.safetensors: real weights are loaded

    @property
    def key(self) -> str:
        """What the point records as ``hf``: the shipped name, else the folder's absolute path."""
        return self.name if self.shipped else str(self.folder)

    def meta(self) -> dict:
        """``fastvlm_bench.json`` of a shipped folder (source repo, the image token's text)."""
        p = self.folder / "fastvlm_bench.json"
        return json.loads(p.read_text()) if p.is_file() else {}


def resolve_source(value: str) -> HFSource:
    """``hf=NAME`` or ``hf=PATH`` -> :class:`HFSource`; raises :class:`HFSourceError` in one line."""
    value = str(value).strip()
    shipped = SHIPPED_DIR / value
    if "/" not in value and (shipped / "config.json").is_file():
        folder, is_shipped = shipped, True
    else:
        folder, is_shipped = Path(value).expanduser().resolve(), False
        if not folder.exists():
            raise HFSourceError(f"hf={value}: no shipped system of that name ({', '.join(shipped_names())}) "
                                "and no such folder")
        if not folder.is_dir():
            raise HFSourceError(f"hf={value}: not a folder (a model folder with config.json and its processor "
                                "files is expected)")
        if not (folder / "config.json").is_file():
            raise HFSourceError(f"hf={value}: the folder has no config.json")
    h = hashlib.sha1()
    for fname in _CONFIG_FILES:
        p = folder / fname
        if p.is_file():
            h.update(fname.encode() + b"\0" + p.read_bytes())
    weights = sorted(folder.glob("*.safetensors"))
    for w in weights:
        st = w.stat()
        h.update(f"{w.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return HFSource(name=value if is_shipped else folder.name, folder=folder, shipped=is_shipped,
                    fingerprint=h.hexdigest()[:12], weights=bool(weights))


def shipped_meta() -> Dict[str, dict]:
    """Each shipped system's ``fastvlm_bench.json`` (:meth:`HFSource.meta`), by name: the one
    reading of those files for the fidelity pairs and the lmms-eval join."""
    return {name: resolve_source(name).meta() for name in shipped_names()}


def check_config(source: HFSource):
    """The folder's config, checked to be a model transformers knows and builds as an
    image-text-to-text model; returns ``(config, model class)``."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        raw = json.loads((source.folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise HFSourceError(f"hf={source.key}: config.json cannot be read: {exc}") from None
    mtype = raw.get("model_type") if isinstance(raw, dict) else None
    if not mtype:
        raise HFSourceError(f"hf={source.key}: config.json has no model_type")
    try:
        config = AutoConfig.from_pretrained(str(source.folder), local_files_only=True)
    except Exception as exc:  # transformers' own wording: unknown model type, bad value ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HFSourceError(f"hf={source.key}: transformers cannot read config.json (model_type {mtype!r}): "
                            f"{first}") from None
    cls_name = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(config.model_type)
    if cls_name is None:
        raise HFSourceError(f"hf={source.key}: model_type {config.model_type!r} is not an image-text-to-text "
                            "model in transformers (AutoModelForImageTextToText has no class for it)")
    import transformers

    return config, getattr(transformers, cls_name)


def image_token_id(config) -> int:
    """The id of the image placeholder token the processor expands and the model fills."""
    for attr in ("image_token_id", "image_token_index"):
        v = getattr(config, attr, None)
        if isinstance(v, int):
            return v
    raise HFSourceError(f"{config.model_type}: the config names no image token id")
