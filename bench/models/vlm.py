"""The VLM under test: vision encoder -> projector -> LLM, with one method per timed stage.

``build_vlm`` is the only way models are made: it builds every part with parameters on the
meta device, checks the target device has the memory for them (else raises
:class:`InsufficientMemoryError`, which a sweep records as *skipped*), then materialises the
parameters directly on the device (or loads a local checkpoint).
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager, List, Optional, Sequence

import torch
from torch import nn

from .encoders import VisionEncoder, get_encoder_spec
from .llms import NO_LLM, get_llm_spec
from .materialize import count_parameters, materialize, meta_parameters
from .memory import working_set_bytes
from .projector import build_projector

class _RenameNotice(logging.Filter):
    """transformers 5.2x announces a rename of ``past_key_values`` (to ``cache``) that its own
    models' signatures do not take yet, through its logger (once per process) as well as a
    FutureWarning; our output carries no library noise, so both are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "are deprecated. Use `cache` instead" not in record.getMessage()


logging.getLogger("transformers.utils.generic").addFilter(_RenameNotice())

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class InsufficientMemoryError(RuntimeError):
    """The device lacks the memory for the point: its parameters and one iteration's working set
    (input, activations, KV cache), checked before allocating."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but torch sees no CUDA device; use device=cpu or auto")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass
class Generation:
    """What :meth:`VLM.generate` produced: the new token ids, why it stopped (``eos``,
    ``until`` or ``max_new_tokens``) and how many visual tokens the image gave."""

    new_ids: List[int]
    stopped: str
    visual_tokens: int


class VLM(nn.Module):
    """Encoder, projector and LLM, exposing the pipeline as separately callable stages.

    An encoder-only point (``llm=none``) has ``projector`` and ``llm`` None: nothing was built
    for them, and its pipeline is the encoder stage alone.
    """

    def __init__(self, encoder: VisionEncoder, projector: Optional[nn.Module], llm: Optional[nn.Module],
                 encoder_name: str, llm_name: str, resolution: int):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.llm = llm
        self.encoder_name, self.llm_name, self.resolution = encoder_name, llm_name, resolution
        #: a token reduction's own stage for :meth:`generate` (``bench.models.reduction.base.for_generation``)
        self.reduce_visual: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    @property
    def encoder_only(self) -> bool:
        return self.llm is None

    def _weights(self) -> torch.Tensor:
        return next((self.encoder if self.llm is None else self.llm).parameters())

    @property
    def device(self) -> torch.device:
        return self._weights().device

    @property
    def dtype(self) -> torch.dtype:
        return self._weights().dtype

    @property
    def num_visual_tokens(self) -> int:
        return self.encoder.num_tokens(self.resolution)

    # ---- stages -------------------------------------------------------------------------
    def preprocess(self, images: Sequence["PIL.Image.Image"]) -> torch.Tensor:  # noqa: F821
        from .preprocess import images_to_tensor

        spec = self.encoder.spec
        return images_to_tensor(images, self.resolution, spec.mean, spec.std, self.device, self.dtype)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels)

    def project(self, visual_tokens: torch.Tensor) -> torch.Tensor:
        return self.projector(visual_tokens)

    def prefill(self, visual_embeds: torch.Tensor, input_ids: torch.Tensor):
        """One forward over [visual embeddings + prompt] with a fresh KV cache.

        Returns ``(first_token_ids, past_key_values, last_logits)``; only the last position's
        logits are computed, as a serving stack does for the first token. The logits come back
        (at no cost) so that the harness can check them for inf/NaN on a warm-up iteration
        instead of paying for a separate forward.
        """
        out = self._prefill_forward(visual_embeds, input_ids)
        logits = out.logits[:, -1, :]
        return logits.argmax(dim=-1), out.past_key_values, logits

    def _prefill_forward(self, visual_embeds: torch.Tensor, input_ids: torch.Tensor):
        text = self.llm.get_input_embeddings()(input_ids)
        return self._llm_prefill(torch.cat([visual_embeds.to(text.dtype), text], dim=1))

    def _llm_prefill(self, embeds: torch.Tensor):
        """The LLM over ``embeds`` with a fresh KV cache, last position's logits only."""
        from transformers import DynamicCache

        return self._llm(inputs_embeds=embeds, past_key_values=DynamicCache(config=self.llm.config),
                         use_cache=True, logits_to_keep=1)

    def decode_step(self, token_ids: torch.Tensor, past):
        """One greedy decode step: the LLM over the latest token of each sequence, on the KV
        cache ``past`` (which grows by one position), last position's logits only.

        Returns ``(next_token_ids, past_key_values, logits)``. The one implementation of a decode
        step: :meth:`generate` (the lmms-eval plugin) and the sweep's ``decode`` stage
        (:mod:`bench.models.decode`) both call it, so both time the same work.
        """
        out = self._llm(input_ids=token_ids[:, None], past_key_values=past, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        return logits.argmax(dim=-1), out.past_key_values, logits

    def _llm(self, **kwargs):
        with warnings.catch_warnings():
            # transformers 5.2x announces a rename of `past_key_values` (to `cache`) that its own
            # models' signatures do not take yet; the warning would repeat on every timed iteration.
            warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
            return self.llm(**kwargs)

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, prefix_ids: torch.Tensor, suffix_ids: torch.Tensor,
                 max_new_tokens: int = 16, eos_token_id: Optional[int] = None,
                 stop: Optional[Callable[[List[int]], bool]] = None,
                 stage: Callable[[str], ContextManager] = lambda name: contextlib.nullcontext(),
                 step: Callable[[], None] = lambda: None) -> Generation:
        """Greedy decoding for one image: [prefix text, image tokens, suffix text] -> new ids.

        Decoding ends at ``eos_token_id``, after ``max_new_tokens`` or once ``stop(new_ids)``
        is true (the token that made it true is kept). ``stage(name)`` wraps each step in a
        context -- ``vision_latency``, ``projector``, ``prefill`` (first token chosen),
        ``decode`` -- so a :class:`~bench.measure.timer.StageTimer` times them (the lmms-eval
        plugin passes ``timer.stage``); ``step()`` is called after each decode step (the
        plugin passes ``timer.step``: per-token times, so TPOT comes from real answers).
        """
        emb = self.llm.get_input_embeddings()
        with stage("vision_latency"):
            feats = self.encode(pixels)
        with stage("projector"):
            vis = self.project(feats)
        if self.reduce_visual is not None:
            with stage("reduce"):
                vis = self.reduce_visual(vis)
        with stage("prefill"):
            out = self._llm_prefill(torch.cat([emb(prefix_ids), vis.to(self.dtype), emb(suffix_ids)], dim=1))
            nxt = out.logits[:, -1, :].argmax(dim=-1)
            past = out.past_key_values
            host = nxt.cpu()  # the first token on the host ends TTFT, as in the sweep
        new: List[int] = []
        stopped = "max_new_tokens"
        with stage("decode"):
            for i in range(max_new_tokens):
                token = int(host[0])
                if eos_token_id is not None and token == eos_token_id:
                    stopped = "eos"
                    break
                new.append(token)
                if stop is not None and stop(new):
                    stopped = "until"
                    break
                if i + 1 == max_new_tokens:
                    break
                nxt, past, _ = self.decode_step(nxt, past)
                host = nxt.cpu()  # the token on the host, as a server streams it
                step()
        return Generation(new, stopped, int(vis.shape[1]))

    def prompt_ids(self, batch_size: int, prompt_tokens: int, seed: int = 0) -> torch.Tensor:
        """Deterministic placeholder prompt token ids (token values do not change latency);
        none for an encoder-only point, which has no prompt."""
        if self.llm is None:
            return torch.empty(batch_size, 0, dtype=torch.long, device=self.device)
        gen = torch.Generator().manual_seed(seed)
        vocab = self.llm.config.vocab_size
        return torch.randint(3, vocab, (batch_size, prompt_tokens), generator=gen).to(self.device)

    def parameter_counts(self) -> dict:
        """Per part; None (not 0) for a part that was not built (encoder-only points)."""
        return {"vision": count_parameters(self.encoder),
                "projector": count_parameters(self.projector) if self.projector is not None else None,
                "llm": count_parameters(self.llm) if self.llm is not None else None}


@dataclass
class BuildInfo:
    build_s: float
    param_bytes: int
    available_bytes: int
    llm_kept: bool = False  # the LLM was the one kept from the previous build (``keep_llm``)


#: ``build_vlm(keep_llm=True)``: the LLM of the last such build, with its key. One entry only.
_KEPT_LLM: dict = {}


def _kept_llm(key) -> Optional[nn.Module]:
    """The kept LLM if it was built for ``key``; otherwise let the kept one go first, so that
    a sweep from a small to a large LLM never holds both."""
    if key is not None and _KEPT_LLM.get("key") == key:
        return _KEPT_LLM["llm"]
    _KEPT_LLM.clear()
    return None


def build_vlm(encoder: str, llm: str, resolution: int, device: str = "auto", dtype: str = "auto",
              attn_implementation: str = "sdpa", projector: str = "mlp2x_gelu",
              checkpoint: Optional[str] = None, memory_headroom: float = 1.15, keep_llm: bool = False,
              batch_size: int = 1, prompt_tokens: int = 32, tiles: int = 1, llm_tokens: Optional[int] = None,
              decode_tokens: int = 0, work=None):
    """Build the VLM on ``device``; returns ``(vlm, BuildInfo)``.

    A tiled point (``bench.models.tiling``) builds its encoder for one tile (``resolution``)
    and says how many encoder inputs an image makes (``tiles``) and how many visual tokens its
    LLM gets (``llm_tokens``), so that the memory check counts its real working set.

    Unknown names and impossible resolutions raise before anything is allocated, and so does
    a point that cannot fit (:class:`InsufficientMemoryError`): its parameters plus one
    iteration's working set for ``batch_size`` and ``prompt_tokens`` (input, activations, KV
    cache; :mod:`bench.models.memory`), times ``memory_headroom``, against the free memory.

    ``keep_llm=True`` (the sweep's points, one after another in a process) keeps the LLM and
    hands the same module to the next build with the same LLM, device, dtype and attention,
    without a checkpoint. Building it again would only write the same placeholder values into
    fresh memory: 0.6-1 s a point for Qwen2-0.5B on a 2-core CPU, about a third of the default
    sweep's build time. No stage changes the LLM's parameters or buffers (each prefill starts
    from a fresh KV cache; ``torch.compile`` wraps the module and leaves it as it was), so a
    kept LLM is the module a fresh build would make. A point with a checkpoint always builds
    (and loads) its own.

    ``llm="none"`` (:data:`~bench.models.llms.NO_LLM`) builds the encoder alone: no projector,
    no LLM, and the memory check counts the encoder's parameters, input and output only.

    ``decode_tokens``: output tokens per answer; the KV cache is counted as it stands at the end
    of the answer (visual + prompt + decode_tokens - 1 positions).

    ``work``: the working set already estimated for these knobs (a measured point's plan,
    ``bench.measure.plan``, estimates it once); estimated here when not given.
    """
    t0 = time.perf_counter()
    encoder_only = llm == NO_LLM
    enc_spec = get_encoder_spec(encoder)
    llm_spec = None if encoder_only else get_llm_spec(llm)
    enc_spec.check_resolution(resolution)
    if encoder_only and checkpoint:
        raise ValueError("llm=none (encoder only) cannot load a LLaVA checkpoint: it has no LLM to load into")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (llm, str(dev), dt, attn_implementation) if keep_llm and not checkpoint and not encoder_only else None
    # an encoder-only point lets a kept LLM go too: its peak RSS must be the encoder's alone
    lm = _kept_llm(key)
    kept = lm is not None
    # Seeded (and the caller's RNG left as it was): the vectors a module initialises itself
    # (biases, class tokens) are the same in every process, so the placeholder model is one
    # model, and a backend's cached export of it stays valid (bench.models.backends.export_cache).
    with torch.random.fork_rng(devices=[]), meta_parameters():
        torch.manual_seed(0)
        enc = enc_spec.build(resolution)
        if not kept and not encoder_only:
            torch.manual_seed(1)
            lm = llm_spec.build(attn_implementation)
        torch.manual_seed(2)  # whether the LLM was built or kept
        proj = None if encoder_only else build_projector(projector, enc_spec.channels, llm_spec.hidden_size)
    vlm = VLM(enc, proj, lm, encoder, llm, resolution).eval()
    elem = torch.empty((), dtype=dt).element_size()
    need = count_parameters(vlm) * elem
    if work is None:
        work = working_set_bytes(resolution, enc_spec.num_tokens(resolution), enc_spec.channels,
                                 getattr(lm, "config", None), batch_size, prompt_tokens, elem, attn_implementation,
                                 encoder_inputs=tiles, llm_tokens=llm_tokens, decode_tokens=decode_tokens)
    new = need - (count_parameters(lm) * elem if kept else 0) + work.total  # a kept LLM's memory is in use
    have = available_memory_bytes(dev)
    if new * memory_headroom > have:
        gib = lambda x: f"{x / 2**30:.3g}"  # noqa: E731
        raise InsufficientMemoryError(
            f"{encoder}+{llm} at batch {batch_size} needs ~{gib((need + work.total) * memory_headroom)} GiB in "
            f"{dtype_name(dt)} on {dev} (parameters {gib(need)} + input {gib(work.input)} + activations "
            f"{gib(work.activations)} + KV cache {gib(work.kv_cache)} GiB, x{memory_headroom:g} headroom), "
            f"only {gib(have)} GiB available")
    for part in ((vlm.encoder, vlm.projector) if kept else (vlm,)):  # an encoder-only vlm is its encoder
        materialize(part, dev, dt)
    if checkpoint:
        from .checkpoint import load_checkpoint

        load_checkpoint(vlm, checkpoint)
    vlm.encoder.prepare_for_inference()
    vlm.eval()
    if key is not None:
        _KEPT_LLM.update(key=key, llm=vlm.llm)
    return vlm, BuildInfo(time.perf_counter() - t0, need, have, kept)
