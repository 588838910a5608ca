"""Structured configs (Hydra ConfigStore): every knob of a sweep point, typed and documented.

The YAML tree in ``sweeps/`` composes on top of :class:`BenchConfig`; a key that is not here
is rejected by Hydra, and values are checked by :func:`validate` before anything is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EncoderConf:
    name: str = MISSING  # a registered encoder (fastvlm-bench list)


@dataclass
class LLMConf:
    name: str = MISSING  # a registered LLM (fastvlm-bench list)


@dataclass
class TimingConf:
    warmup: int = 1  # untimed iterations after the FLOP-counting pass
    min_repeats: int = 3  # timed iterations, at least
    min_seconds: float = 0.0  # and at least this long in timed iterations
    max_repeats: int = 1000  # stop here even if min_seconds is not reached
    max_seconds: Optional[float] = None  # stop after this long once min_repeats are done


@dataclass
class BenchConfig:
    name: str = "default"  # sweep name: results go to <results_dir>/<name>/
    encoder: EncoderConf = field(default_factory=EncoderConf)
    llm: LLMConf = field(default_factory=LLMConf)
    resolution: int = 1024  # square input, pixels
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    dtype: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on CUDA, fp32 on CPU)
    batch_size: int = 1
    prompt_tokens: int = 32  # text tokens after the visual tokens
    attn_implementation: str = "sdpa"  # sdpa | eager
    compile: bool = False  # torch.compile every stage (compile time recorded apart)
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune ...
    preprocess: bool = True  # time preprocessing of a real image (not part of TTFT)
    threads: Optional[int] = None  # CPU threads for torch (default: all cores)
    projector: str = "mlp2x_gelu"
    memory_headroom: float = 1.15  # skip a point unless free memory >= parameters x this
    checkpoint: Optional[str] = None  # local LLaVA-style checkpoint folder (optional)
    timing: TimingConf = field(default_factory=TimingConf)
    count_flops: bool = True
    measure_peak: bool = True  # measure the device's matmul peak once (roofline)
    results_dir: str = "results"
    force: bool = False  # re-measure points already in the store
    report: bool = True  # render reports/<name>/ when a multirun ends
    reports_dir: str = "reports"


VALID_DTYPES = ("auto", "fp32", "bf16", "fp16")
VALID_ATTN = ("sdpa", "eager")


class ConfigError(ValueError):
    """A knob with a value that cannot work (caught before any model is built)."""


def validate(cfg: BenchConfig) -> None:
    problems: List[str] = []
    for key in ("resolution", "batch_size", "prompt_tokens"):
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"{key} must be a positive whole number, got {v!r}")
    if cfg.threads is not None and cfg.threads <= 0:
        problems.append(f"threads must be positive, got {cfg.threads}")
    t = cfg.timing
    if cfg.memory_headroom <= 0:
        problems.append(f"memory_headroom must be positive, got {cfg.memory_headroom}")
    if t.warmup < 0:
        problems.append(f"timing.warmup must be >= 0, got {t.warmup}")
    if t.min_repeats < 1:
        problems.append(f"timing.min_repeats must be >= 1, got {t.min_repeats}")
    if t.min_seconds < 0:
        problems.append(f"timing.min_seconds must be >= 0, got {t.min_seconds}")
    if t.max_repeats < t.min_repeats:
        problems.append(f"timing.max_repeats ({t.max_repeats}) must be >= timing.min_repeats ({t.min_repeats})")
    if t.max_seconds is not None and t.max_seconds <= 0:
        problems.append(f"timing.max_seconds must be positive, got {t.max_seconds}")
    if cfg.dtype not in VALID_DTYPES:
        problems.append(f"dtype must be one of {', '.join(VALID_DTYPES)}, got {cfg.dtype!r}")
    if cfg.attn_implementation not in VALID_ATTN:
        problems.append(f"attn_implementation must be one of {', '.join(VALID_ATTN)}, got {cfg.attn_implementation!r}")
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        problems.append(f"device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        problems.append(f"name must be a plain folder name, got {cfg.name!r}")
    from .models import ENCODERS, LLMS

    for kind, reg, value in (("encoder", ENCODERS, cfg.encoder.name), ("llm", LLMS, cfg.llm.name)):
        if value not in reg:
            problems.append(f"unknown {kind} {value!r}; valid: {', '.join(reg.names())}")
    if problems:
        raise ConfigError("; ".join(problems))


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=BenchConfig)
