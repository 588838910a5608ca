"""lmms-eval model plugin: evaluate the benchmark's own VLM build and time it in the same run.

    python -m lmms_eval --model fastvlm_bench \\
        --model_args encoder=fastvithd,llm=qwen2_0.5b,resolution=1024,checkpoint=/ckpt/fastvlm-0.5b,device=cuda,dtype=bf16 \\
        --tasks gqa,textvqa --batch_size 1 --output_path out/

The model is built exactly as the efficiency sweep builds it (``bench.models.build_vlm``),
with the weights of a local LLaVA-style checkpoint folder (``bench.models.checkpoint``) and
the tokenizer saved in that folder (``bench.models.checkpoint.load_tokenizer``: AutoTokenizer,
local files only). Pass the device as
``device=`` inside ``--model_args`` (not lmms-eval's ``--device`` as well).

Registration: lmms-eval 0.7 loads every entry point of the group ``lmms_eval.models`` and
expects a ``ModelManifest`` (or a callable returning one) -- it *calls* a callable payload,
so the entry point must name :func:`lmms_eval_manifest`, not the model class::

    [project.entry-points."lmms_eval.models"]
    fastvlm_bench = "bench.accuracy.lmms_plugin:lmms_eval_manifest"

model_args:
    encoder, llm, resolution   the configuration (names as in ``fastvlm-bench list``)
    checkpoint                 checkpoint folder (weights + tokenizer); without it the model
                               has placeholder weights and needs ``tokenizer=FOLDER``
    tokenizer                  tokenizer folder (default: the checkpoint folder)
    device, dtype              as in the sweep: auto | cpu | cuda[:N];  auto | fp32 | bf16 | fp16
    projector, attn_implementation   as in the sweep (mlp2x_gelu, sdpa)
    reduction, reduction.<param>     token reduction as in the sweep (``reduction=tome,reduction.tokens=64``;
                               ``bench.models.reduction``); fastv/fastv_mask are refused here (they
                               expect the visual tokens first, a chat prompt puts text before them)
    prompt                     ``chat`` (the tokenizer's chat template, image first in the user
                               turn, LLaVA-style) or ``plain`` (``<image>`` then the question);
                               default: chat when the tokenizer has a template
    max_new_tokens             default when a task gives none (128)
    timings_out                path of the timings JSON (default: next to lmms-eval's results,
                               ``<output_path>/<date>_fastvlm_bench_timings.json``)

Generation is greedy (``temperature``/``do_sample`` of tasks are ignored with a warning),
stops at EOS, at ``max_new_tokens`` or once any ``until`` string appears (the answer is cut
before it). ``loglikelihood`` (multiple-choice-by-likelihood tasks) is not implemented.

Timing: every sample is one :class:`bench.measure.timer.StageTimer` iteration with the sweep's stage
names -- ``vision_latency`` (encoder), ``projector``, ``prefill`` (LLM over visual + prompt
tokens, first token chosen) and the span ``ttft`` (image tensor in -> first token out) -- plus
``decode`` (the remaining tokens). Summaries (median, mean, p10/p90, IQR, n) per task and over
all samples are written with the model_args, so one run yields accuracy (lmms-eval's results
JSON, which records the model_args under ``config.model_args``) and efficiency for the same
configuration.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

MODEL_ID = "fastvlm_bench"
CLASS_PATH = "bench.accuracy.lmms_plugin.FastVLMBench"
TTFT_SPAN = ("vision_latency", "prefill")


def lmms_eval_manifest():
    """Entry-point payload for lmms-eval's model registry (group ``lmms_eval.models``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def _argv_value(flag: str, argv: Sequence[str]) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def default_timings_path(argv: Optional[Sequence[str]] = None, now: Optional[_dt.datetime] = None) -> Optional[Path]:
    """Where lmms-eval writes its results for this command line (None without --output_path).

    lmms-eval writes ``<output_path>/<sanitized model name>/<date>_results.json`` where the
    model name comes from ``pretrained=``/``model=``/``path=``... in model_args (empty for ours,
    so normally ``<output_path>/<date>_results.json``).
    """
    argv = list(sys.argv if argv is None else argv)
    out = _argv_value("--output_path", argv)
    if not out:
        return None
    sub = ""
    try:
        from lmms_eval.loggers.evaluation_tracker import GeneralConfigTracker
        from lmms_eval.utils import sanitize_model_name

        sub = sanitize_model_name(GeneralConfigTracker._get_model_name(_argv_value("--model_args", argv) or ""))
    except Exception:  # layout helpers moved: fall back to the output folder itself
        sub = ""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d_%H%M%S")
    return Path(out) / sub / f"{stamp}_fastvlm_bench_timings.json"


def _as_int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"fastvlm_bench: model_arg {name} must be an integer, got {value!r}") from None


class FastVLMBench(lmms):
    """The benchmark's VLM (``build_vlm``) as an lmms-eval simple model."""

    is_simple = True

    def __init__(self, encoder: str = None, llm: str = None, resolution=None, checkpoint: Optional[str] = None,
                 tokenizer: Optional[str] = None, device: str = "auto", dtype: str = "auto",
                 projector: str = "mlp2x_gelu", attn_implementation: str = "sdpa", prompt: Optional[str] = None,
                 max_new_tokens=128, timings_out: Optional[str] = None, batch_size=1, max_batch_size=None,
                 reduction: str = "none", **kwargs) -> None:
        super().__init__()
        missing = [n for n, v in (("encoder", encoder), ("llm", llm), ("resolution", resolution)) if v in (None, "")]
        if missing:
            raise ValueError(f"fastvlm_bench: model_args need {', '.join(missing)} "
                             f"(e.g. encoder=fastvithd,llm=qwen2_0.5b,resolution=1024,checkpoint=PATH)")
        reduction_params = {k.split(".", 1)[1]: kwargs.pop(k) for k in list(kwargs) if k.startswith("reduction.")}
        if kwargs:
            warnings.warn(f"fastvlm_bench: ignoring unknown model_args {sorted(kwargs)}")
        if _as_int(batch_size, "batch_size") != 1:
            warnings.warn("fastvlm_bench: batch_size is ignored; samples run one at a time so each is timed alone")
        from ..models.checkpoint import load_tokenizer
        from ..models.vlm import build_vlm
        from ..measure.timer import StageTimer

        from ..models.reduction.base import check_reduction, conf_from_args, for_generation, point_params

        reduction_conf = conf_from_args(str(reduction), reduction_params)
        self.model_args = dict(encoder=str(encoder), llm=str(llm), resolution=_as_int(resolution, "resolution"),
                               checkpoint=str(checkpoint) if checkpoint else None, device=str(device),
                               dtype=str(dtype), projector=str(projector),
                               attn_implementation=str(attn_implementation), reduction=reduction_conf.name,
                               reduction_params=point_params(reduction_conf))
        bad = check_reduction(reduction_conf, self.model_args["encoder"], self.model_args["llm"],
                              self.model_args["resolution"], False)
        if bad:
            raise ValueError("fastvlm_bench: " + "; ".join(bad))
        tok_dir = tokenizer or checkpoint
        if not tok_dir:
            raise ValueError("fastvlm_bench: give checkpoint=FOLDER (weights + tokenizer) or tokenizer=FOLDER")
        if not Path(str(tok_dir)).is_dir():
            raise FileNotFoundError(f"fastvlm_bench: tokenizer folder {tok_dir} does not exist")
        self.tokenizer = load_tokenizer(tok_dir)
        self.vlm, self.build_info = build_vlm(
            self.model_args["encoder"], self.model_args["llm"], self.model_args["resolution"],
            device=self.model_args["device"], dtype=self.model_args["dtype"],
            attn_implementation=self.model_args["attn_implementation"], projector=self.model_args["projector"],
            checkpoint=self.model_args["checkpoint"])
        for_generation(reduction_conf, self.vlm)  # the same reduction knob as the sweep (reduction=NAME)
        vocab = self.vlm.llm.config.vocab_size
        if len(self.tokenizer) > vocab:
            raise ValueError(f"fastvlm_bench: tokenizer has {len(self.tokenizer)} tokens, the LLM only {vocab}")
        if prompt is None:
            prompt = "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"
        if prompt not in ("chat", "plain"):
            raise ValueError(f"fastvlm_bench: prompt must be chat or plain, got {prompt!r}")
        self.prompt = prompt
        self.default_max_new_tokens = _as_int(max_new_tokens, "max_new_tokens")
        eos = self.tokenizer.eos_token_id
        self.eos_token_id = eos if eos is not None else self.vlm.llm.config.eos_token_id
        self.timer = StageTimer(self.vlm.device, spans={"ttft": TTFT_SPAN})
        self.task_timers: Dict[str, Any] = {}
        self.samples: List[Dict[str, Any]] = []
        self.timings_out = Path(timings_out) if timings_out else default_timings_path()
        self._warned_sampling = False

    # ---- lmms-eval API -----------------------------------------------------------------
    @property
    def device(self):
        return self.vlm.device

    def loglikelihood(self, requests: List[Instance]) -> List[Tuple[float, bool]]:
        raise NotImplementedError(
            "fastvlm_bench implements generate_until only; loglikelihood (multiple choice by likelihood) "
            "is not supported -- use the generative variant of the task")

    def generate_until_multi_round(self, requests) -> List[str]:
        raise NotImplementedError("fastvlm_bench does not support multi-round generation")

    def generate_until(self, requests: List[Instance]) -> List[str]:
        from tqdm import tqdm

        answers: List[str] = []
        for req in tqdm(requests, disable=(self.rank != 0), desc="fastvlm_bench"):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            images = [v for v in (visuals if isinstance(visuals, list) else [visuals]) if v is not None]
            text = self._respond(context, dict(gen_kwargs or {}), images, task, doc_id)
            answers.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        self.write_timings()
        return answers

    # ---- generation ----------------------------------------------------------------------
    def _prompt_ids(self, context: str, has_image: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        tok, dev = self.tokenizer, self.vlm.device
        if self.prompt == "chat":
            user = ("<image>\n" if has_image else "") + context
            text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                           add_generation_prompt=True)
            prefix, _, suffix = text.partition("<image>\n") if has_image else ("", "", text)
            if has_image and not _:
                prefix, suffix = "", text
        else:
            prefix, suffix = "", context + "\n"
        pre = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        if self.prompt == "plain" and tok.bos_token_id is not None:
            pre = [tok.bos_token_id] + pre
        suf = tok(suffix, add_special_tokens=False)["input_ids"]
        as_t = lambda ids: torch.tensor([ids], dtype=torch.long, device=dev)  # noqa: E731
        return as_t(pre), as_t(suf)

    @torch.no_grad()
    def _respond(self, context: str, gen_kwargs: dict, images: list, task: str, doc_id) -> str:
        if len(images) != 1:
            raise ValueError(f"fastvlm_bench: task {task} doc {doc_id} gives {len(images)} images; "
                             "this single-image VLM takes exactly one")
        if (gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0) and not self._warned_sampling:
            warnings.warn("fastvlm_bench decodes greedily; the task's sampling settings are ignored")
            self._warned_sampling = True
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else [u for u in until if u]
        max_new = int(gen_kwargs.get("max_new_tokens") or self.default_max_new_tokens)
        vlm = self.vlm
        t0 = time.perf_counter()
        pixels = vlm.preprocess(images)
        prefix_ids, suffix_ids = self._prompt_ids(context, True)
        preprocess_ms = (time.perf_counter() - t0) * 1e3
        timer = self.timer
        stop = (lambda ids: any(u in self.tokenizer.decode(ids, skip_special_tokens=True) for u in until)) \
            if until else None
        with timer.iteration():
            gen = vlm.generate(pixels, prefix_ids, suffix_ids, max_new_tokens=max_new, eos_token_id=self.eos_token_id,
                               stop=stop, stage=timer.stage)
        new = gen.new_ids
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for u in until:
            text = text.split(u)[0]
        last = {name: vals[-1] for name, vals in timer.samples.items() if vals}
        self.samples.append(dict(
            task=task, doc_id=doc_id, visual_tokens=gen.visual_tokens,
            prompt_tokens=int(prefix_ids.shape[1] + suffix_ids.shape[1]), new_tokens=len(new), stopped=gen.stopped,
            preprocess_ms=preprocess_ms, **{f"{k}_ms": v for k, v in last.items()}))
        return text.strip()

    # ---- timings -------------------------------------------------------------------------
    def timings_summary(self) -> Dict[str, Any]:
        from ..measure.stats import summarize

        def summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
            stages = {}
            for key in ("vision_latency_ms", "projector_ms", "prefill_ms", "ttft_ms", "decode_ms", "preprocess_ms"):
                vals = [r[key] for r in rows if key in r]
                if vals:
                    stats = dataclasses.asdict(summarize(vals))
                    stats.pop("samples", None)  # per-sample values are in "samples" below
                    stages[key] = stats
            return {"n": len(rows), "stages": stages,
                    "visual_tokens": sorted({r["visual_tokens"] for r in rows}),
                    "mean_prompt_tokens": sum(r["prompt_tokens"] for r in rows) / max(1, len(rows)),
                    "mean_new_tokens": sum(r["new_tokens"] for r in rows) / max(1, len(rows))}

        tasks = sorted({r["task"] for r in self.samples})
        vlm = self.vlm
        return {
            "model": MODEL_ID,
            "model_args": self.model_args,
            "encoder": self.model_args["encoder"], "resolution": self.model_args["resolution"],
            "llm": self.model_args["llm"], "reduction": self.model_args["reduction"],
            "reduction_params": self.model_args["reduction_params"],
            "device": str(vlm.device), "dtype": str(vlm.dtype).replace("torch.", ""),
            "torch_device_name": torch.cuda.get_device_name(vlm.device) if vlm.device.type == "cuda" else "cpu",
            "visual_tokens": vlm.num_visual_tokens,
            "note": "ttft = image tensor -> first token (vision_latency + projector + prefill); "
                    "the first samples include warm-up",
            "overall": summary(self.samples) if self.samples else {"n": 0},
            "tasks": {t: summary([r for r in self.samples if r["task"] == t]) for t in tasks},
            "samples": self.samples,
        }

    def write_timings(self) -> Optional[Path]:
        if self.timings_out is None:
            warnings.warn("fastvlm_bench: no --output_path and no timings_out model_arg: timings not written")
            return None
        from ..results.io import atomic_write_text

        atomic_write_text(self.timings_out, json.dumps(self.timings_summary(), indent=2, default=str))
        return self.timings_out
