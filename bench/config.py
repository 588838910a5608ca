"""Structured configs (Hydra ConfigStore): every knob of a sweep point, typed and documented.

The YAML tree in ``sweeps/`` composes on top of :class:`BenchConfig`; a key that is not here
is rejected by Hydra, and values are checked by :func:`validate` before anything is built.

This module is the spine every stage may import: the typed configs, the user-input error
class (:class:`InputError`) and where the package's own files are (:func:`sweeps_dir`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Collection, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class _Choice(str, Enum):
    """A fixed set of string values that OmegaConf checks (``dtype=bf16``: the member's name is
    its value). A ``str`` subclass that prints as its value, so it compares equal to the plain
    strings the rest of the code and the records use (``"bf16"``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Dtype(_Choice):
    auto = "auto"  # bf16 on CUDA, fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Attention(_Choice):
    sdpa = "sdpa"
    eager = "eager"


class Allocator(_Choice):
    """The measuring process's memory allocator (bench.measure.allocator, README "CPU allocator")."""
    glibc = "glibc"  # glibc malloc as the process finds it (before issue 33)
    glibc_held = "glibc_held"  # glibc, mmap/trim thresholds held at 256 MiB / 1 GiB (the default)
    tcmalloc = "tcmalloc"  # preloaded (Debian: libtcmalloc-minimal4)
    jemalloc = "jemalloc"  # preloaded (Debian: libjemalloc2)


class TimingMode(_Choice):
    pipelined = "pipelined"
    isolated = "isolated"  # synchronise around every stage


@dataclass
class EncoderConf:
    name: str = MISSING  # a registered encoder (fastvlm-bench list)


@dataclass
class LLMConf:
    name: str = MISSING  # a registered LLM (fastvlm-bench list), or none: encoder only


@dataclass
class BackendConf:
    """How the point's stages run (``backend=NAME``, a group made from the backend registry,
    :mod:`bench.models.backends`). Each backend reads the knobs that are its own; the ones that
    change what runs go into the point id (``backend_options``)."""

    name: str = "eager"  # eager | compile | onnxruntime | openvino
    #: stages the backend runs (default: every stage it can run); the others stay eager, and
    #: the record's ``pipeline`` says which ran where
    stages: Optional[List[str]] = None
    opset: int = 18  # ONNX opset of the export (onnxruntime)
    graph_opt: str = "all"  # onnxruntime graph optimisation level: disable | basic | extended | all
    provider: str = "CPUExecutionProvider"  # onnxruntime execution provider
    hint: str = "LATENCY"  # openvino PERFORMANCE_HINT
    precision: Optional[str] = None  # openvino INFERENCE_PRECISION_HINT (default: the point's dtype)
    streams: int = 1  # openvino NUM_STREAMS
    atol: Optional[float] = None  # numerics check: allowed max |backend - eager| / max |eager| (default per dtype)


@dataclass
class TilingConf:
    """The image-to-token pipeline (``tiling=NAME``, a group filled from ``bench.models.tiling``)."""

    name: str = "none"  # none | anyres_next | anyres_max_9 (fastvlm-bench list)
    tile: Optional[int] = None  # tile side in px (default: the encoder's native input size)


@dataclass
class ReductionConf:
    """``reduction=NAME``: a token-reduction method (``bench.models.reduction``); each method's
    config derives from this one and adds its typed parameters (``reduction.tokens=64`` ...)."""

    name: str = "none"
    #: visual tokens to keep, the one budget every method takes (0: the method's own parameters);
    #: ignored by ``none`` (the sweep's resolution lines use it to pick the resolution)
    tokens: int = 0


@dataclass
class EndpointConf:
    """``endpoint=KIND``: measure a running server through the OpenAI chat-completions API, not a
    model in this process (docs/endpoint.md); the kind (``bench.models.endpoints``) adds its own
    request fields. ``none``: an in-process point."""

    name: str = "none"  # none | openai | llama_cpp | vllm | sglang
    url: Optional[str] = None  # http://HOST:PORT/v1 (with launch: the started server's, on loopback)
    model: Optional[str] = None  # the served model's name (default: the first /v1/models lists)
    api_key_env: Optional[str] = None  # the NAME of the environment variable with the key (never recorded)
    image_format: str = "png"  # png | jpeg: the resized sample photo, sent as a data URL
    timeout_s: float = 120.0  # per request: connecting plus the whole streamed answer
    concurrency: int = 1  # requests in flight per iteration (the record's batch_size)
    launch: Optional[str] = None  # llama_cpp: start llama-server with gguf= and mmproj=
    gguf: Optional[str] = None  # launch: the text model's GGUF
    mmproj: Optional[str] = None  # launch: the vision projector's GGUF
    server_bin: Optional[str] = None  # launch: llama-server (default: $FASTVLM_BENCH_LLAMA_SERVER, PATH, cache)
    server_threads: Optional[int] = None  # launch: llama-server -t, pinned to as many CPUs (default: all)
    slots: int = 4  # launch: llama-server -np, requests it serves at once
    ctx: int = 32768  # launch: llama-server -c, shared by the slots


@dataclass
class TimingConf:
    """The timer's stopping rule (``timing.*``); see :mod:`bench.measure.timer` for the method.

    Defaults aim at a median TTFT known to +-2 % (95 % interval) on a quiet machine, with
    floors after MLPerf LoadGen (a minimum count and duration) and a per-point budget so that
    the default sweep ends in minutes on a 2-core CPU. ``timing=quick`` is a preset for smoke
    tests: a couple of iterations, no interval target.
    """

    warmup: int = 2  # warm-up iterations, at least
    warmup_seconds: float = 0.5  # and at least this long
    warmup_max_seconds: float = 10.0  # stop waiting for stable iteration times after this long
    stable_window: int = 3  # warm-up ends when the median of the last N iterations ...
    stable_tol: float = 0.05  # ... is within this fraction of the N before
    min_repeats: int = 10  # timed iterations, at least (a 95 % median interval needs >= 6)
    min_seconds: float = 1.0  # and at least this long
    max_repeats: int = 1000  # stop here whatever the interval
    max_seconds: float = 20.0  # per-point budget of the timed loop (min_repeats still holds)
    target: float = 0.02  # stop once the median's 95 % interval is within +-target
    confidence: float = 0.95
    target_stage: str = "ttft"
    mode: TimingMode = TimingMode.pipelined  # pipelined | isolated (synchronise around every stage)
    turns: Optional[str] = None  # a file shared with processes to interleave with (bench.measure.turns)
    turn_seconds: float = 1.0  # with turns: pass the turn after blocks of about this long
    turn_blocks: int = 6  # with turns: time at least this many blocks (budget permitting)
    turn_parties: int = 2  # with turns: nobody starts until this many processes have arrived

    def problems(self) -> List[str]:
        out = []
        if self.warmup < 0 or self.warmup_seconds < 0 or self.warmup_max_seconds < 0:
            out.append("timing.warmup, timing.warmup_seconds and timing.warmup_max_seconds must be >= 0")
        if self.stable_window < 1 or self.stable_tol <= 0:
            out.append("timing.stable_window must be >= 1 and timing.stable_tol > 0")
        if self.min_repeats < 1:
            out.append(f"timing.min_repeats must be >= 1, got {self.min_repeats}")
        if self.min_seconds < 0:
            out.append(f"timing.min_seconds must be >= 0, got {self.min_seconds}")
        if self.max_repeats < self.min_repeats:
            out.append(f"timing.max_repeats ({self.max_repeats}) must be >= timing.min_repeats ({self.min_repeats})")
        if self.max_seconds <= 0:
            out.append(f"timing.max_seconds must be positive, got {self.max_seconds}")
        if self.turn_parties < 1:
            out.append(f"timing.turn_parties must be >= 1, got {self.turn_parties}")
        if self.turn_seconds <= 0 or self.turn_blocks < 0:
            out.append(f"timing.turn_seconds must be positive and timing.turn_blocks >= 0, got "
                       f"{self.turn_seconds} and {self.turn_blocks}")
        if not 0 < self.target < 1 or not 0 < self.confidence < 1:
            out.append(f"timing.target must be in (0, 1) and timing.confidence in (0, 1), got {self.target} and "
                       f"{self.confidence}: values are fractions (0.05 = 5 %)")
        if self.stable_tol >= 1:
            out.append(f"timing.stable_tol must be below 1, got {self.stable_tol}: values are fractions (0.05 = 5 %)")
        if self.mode not in [m.value for m in TimingMode]:  # OmegaConf checks it; a TimingConf made in code may not
            out.append(f"timing.mode must be pipelined or isolated, got {str(self.mode)!r}")
        return out


#: ``timing=quick``: smoke tests and plumbing checks, not measurements worth quoting.
QUICK_TIMING = TimingConf(warmup=0, warmup_seconds=0.0, stable_window=1, min_repeats=2, min_seconds=0.0,
                          max_repeats=2, max_seconds=0.5)


@dataclass
class BenchConfig:
    name: str = "default"  # sweep name: results go to <results_dir>/<name>/
    encoder: EncoderConf = field(default_factory=EncoderConf)
    llm: LLMConf = field(default_factory=LLMConf)
    resolution: int = 1024  # square input, pixels (with image_size: recorded as the image's longer side)
    tiling: TilingConf = field(default_factory=TilingConf)
    # The image's shape for tiled points, WxH in pixels or `photo` (the sample photo's own
    # 512x600); default: the square resolution x resolution. Its aspect ratio drives the grid.
    image_size: Optional[str] = None
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    dtype: Dtype = Dtype.auto  # fp32 | bf16 | fp16 | auto (bf16 on CUDA, fp32 on CPU)
    batch_size: int = 1
    prompt_tokens: int = 32  # text tokens after the visual tokens
    # Output tokens per answer, the first from prefill, then N-1 greedy decode steps timed in
    # the same iteration (EOS ignored). 0: first token only (TTFT), today's records and ids.
    decode_tokens: int = 0
    attn_implementation: Attention = Attention.sdpa  # sdpa | eager
    backend: BackendConf = field(default_factory=BackendConf)  # eager | compile | onnxruntime | openvino
    compile: bool = False  # torch.compile every stage (compile time recorded apart): backend=compile
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune ...
    preprocess: bool = True  # time preprocessing of a real image (not part of TTFT)
    threads: Optional[int] = None  # CPU threads for torch (default: the cores this process may use)
    # The measuring process's allocator: glibc | glibc_held | tcmalloc | jemalloc. A point whose
    # allocator is not the process's is measured in a process started under it (issue 33).
    allocator: Allocator = Allocator.glibc_held
    tf32: bool = False  # CUDA: TF32 for matmuls AND cuDNN convs (False: IEEE fp32 for both)
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick conv algorithms for the fixed shapes
    channels_last: bool = False  # conv encoders (and their input) in NHWC memory format
    # A known amount of real extra work inside one stage's timed region: N matmuls of
    # 256x256 fp32 on the point's device. For proving that `compare` catches a slowdown of a
    # given size (calibrate N against the stage's time); never set it for a measurement.
    extra_work_stage: Optional[str] = None  # preprocess | vision_latency | projector | prefill
    extra_work_matmuls: int = 0
    projector: str = "mlp2x_gelu"
    memory_headroom: float = 1.15  # skip a point unless free memory >= parameters x this
    # Batch-size ladder (sweep=throughput): skip a point (not recorded) when the same point at
    # half its batch size, already in the store, predicts (2x its iteration time x
    # timing.min_repeats) more than the per-point budget timing.max_seconds, or was skipped
    # for memory (KV cache + parameters, checked before allocation). Not part of the point id.
    batch_ladder: bool = False
    # skip a point whose resolution is not one the FastVLM paper used for its encoder
    # (`fastvlm-bench list`): a cross-product sweep of several encoders then measures each at
    # its own paper resolutions only (sweep=runtimes)
    paper_resolutions_only: bool = False
    checkpoint: Optional[str] = None  # local LLaVA-style checkpoint folder (optional)
    # A transformers VLM instead of a composed one: a shipped system's name (fastvlm-bench list)
    # or a local model folder (config.json + processor files; *.safetensors load when present).
    # encoder=, llm= and tiling= do not apply: the model's own class and processor decide.
    hf: Optional[str] = None
    endpoint: EndpointConf = field(default_factory=EndpointConf)  # a running server instead (docs/endpoint.md)
    min_pixels: Optional[int] = None  # hf points, Qwen2-VL-style processors: smart_resize's lower bound
    max_pixels: Optional[int] = None  # ... and upper bound (default: the processor's own)
    timing: TimingConf = field(default_factory=TimingConf)
    reduction: ReductionConf = field(default_factory=ReductionConf)  # token reduction: none | pool | random | ...
    count_flops: bool = True
    measure_peak: bool = True  # measure the device's matmul peak once (roofline)
    results_dir: str = "results"
    force: bool = False  # re-measure points already in the store
    report: bool = True  # render reports/<name>/ when a multirun ends
    reports_dir: str = "reports"


VALID_DTYPES = tuple(m.value for m in Dtype)
VALID_ATTN = tuple(m.value for m in Attention)


class InputError(ValueError):
    """Bad input from the user: a one-line message, exit status 2 (``fastvlm-bench <command>:
    error: <message>``). Every command's user errors derive from it, so the CLI reports them
    all the same way."""


class ConfigError(InputError):
    """A knob with a value that cannot work (caught before any model is built)."""


#: ``llm=none``: an encoder-only point (no projector, prefill or TTFT). Defined here, the bottom of
#: the import flow, because a config check needs it; ``bench.models.llms`` re-exports it.
NO_LLM = "none"

#: The checks of the stages above the configuration, each ``check(cfg, swept, problems)`` appending
#: its problems (the registries' names, each backend's and token-reduction method's own rules).
#: ``bench.models`` adds its own on import (:mod:`bench.models.config_groups`), so that this module
#: imports no stage package and :func:`validate` still says every problem of a point at once.
POINT_CHECKS: List[Callable[["BenchConfig", Collection[str], List[str]], None]] = []

#: The config groups made from the stages' registries, each ``register(config_store)``; filled the
#: same way (:mod:`bench.models.config_groups`) and run by :func:`register_configs`.
GROUP_REGISTRARS: List[Callable[[ConfigStore], None]] = []


def validate(cfg: BenchConfig, swept: Optional[Collection[str]] = None) -> None:
    """Every problem of ``cfg`` in one :class:`ConfigError`. ``swept``: keys a multirun sweeps,
    whose value in ``cfg`` is only the config file's; checks across keys that involve them are
    left to each point's own validation. ``swept`` given and empty: the whole run is this one
    point, so what would make the point ``skipped`` (a resolution or tile the encoder cannot
    take) is bad input, exit 2; in a grid it stays a ``skipped`` row (``swept=None``, a point)."""
    from .config_checks import endpoint_problems, hf_problems, knob_problems

    problems: List[str] = []
    problems += knob_problems(cfg, set(swept or ()))
    for key in ("resolution", "batch_size", "prompt_tokens"):
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"{key} must be a positive whole number, got {v!r}")
    if cfg.threads is not None and cfg.threads <= 0:
        problems.append(f"threads must be positive, got {cfg.threads}")
    if cfg.timing.turns and "timing.turns" not in set(swept or ()) \
            and not Path(cfg.timing.turns).expanduser().parent.is_dir():  # before the results folder is made
        problems.append(f"timing.turns={cfg.timing.turns}: its folder {Path(cfg.timing.turns).expanduser().parent} "
                        "does not exist")
    if cfg.memory_headroom <= 0:
        problems.append(f"memory_headroom must be positive, got {cfg.memory_headroom}")
    problems += cfg.timing.problems()
    if not isinstance(cfg.decode_tokens, int) or isinstance(cfg.decode_tokens, bool) or cfg.decode_tokens < 0 \
            or cfg.decode_tokens == 1:
        problems.append(f"decode_tokens must be 0 (first token only) or at least 2 output tokens, "
                        f"got {cfg.decode_tokens!r}")
    if cfg.decode_tokens and cfg.llm.name == NO_LLM:
        problems.append("decode_tokens needs an LLM: llm=none is an encoder-only point")
    if cfg.decode_tokens and str(cfg.backend.name) not in ("eager",):
        problems.append(f"decode_tokens runs the LLM eagerly (VLM.decode_step); backend={cfg.backend.name} is not "
                        "supported with it yet")
    if cfg.compile and cfg.decode_tokens:
        problems.append("compile=true with decode_tokens is not supported: every decode step has a new KV-cache "
                        "length, so static-shape graphs would recompile on every step")
    if cfg.timing.target_stage in ("ttst", "tpot", "itl", "e2e", "decode") and not cfg.decode_tokens:
        problems.append(f"timing.target_stage={cfg.timing.target_stage} needs decode_tokens >= 2")
    if cfg.timing.target_stage in ("tpot", "itl") and cfg.decode_tokens:
        problems.append(f"timing.target_stage={cfg.timing.target_stage} is derived after the loop; "
                        "use e2e or decode")
    if cfg.extra_work_matmuls < 0:
        problems.append(f"extra_work_matmuls must be >= 0, got {cfg.extra_work_matmuls}")
    if cfg.extra_work_stage not in (None, "preprocess", "vision_latency", "projector", "prefill"):
        problems.append(f"extra_work_stage must be preprocess, vision_latency, projector or prefill, "
                        f"got {cfg.extra_work_stage!r}")
    # OmegaConf checks these from the command line; a BenchConfig made in code is checked here
    if cfg.dtype not in VALID_DTYPES:
        problems.append(f"dtype must be one of {', '.join(VALID_DTYPES)}, got {str(cfg.dtype)!r}")
    if cfg.attn_implementation not in VALID_ATTN:
        problems.append(f"attn_implementation must be one of {', '.join(VALID_ATTN)}, "
                        f"got {str(cfg.attn_implementation)!r}")
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        problems.append(f"device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        problems.append(f"name must be a plain folder name, got {cfg.name!r}")
    problems += hf_problems(cfg)
    problems += endpoint_problems(cfg)
    if not POINT_CHECKS:
        raise RuntimeError("bench.config.validate: no stage has registered its checks; import bench.models first")
    for check in POINT_CHECKS:
        check(cfg, swept, problems)
    if problems:
        raise ConfigError("; ".join(problems))


def unusual(cfg: BenchConfig) -> List[str]:
    """Legal values that are probably mistakes (a percent written as a fraction's place, a check
    made blind); the runner logs each as a warning."""
    out = []
    t = cfg.timing
    if t.target > 0.25:
        out.append(f"timing.target={t.target:g} asks for a median known to +-{t.target * 100:g} %: values are "
                   "fractions (0.05 = 5 %)")
    if t.stable_tol > 0.5:
        out.append(f"timing.stable_tol={t.stable_tol:g} ends the warm-up on any change up to {t.stable_tol * 100:g} %: "
                   "values are fractions (0.05 = 5 %)")
    if 0 < t.confidence < 0.8:
        out.append(f"timing.confidence={t.confidence:g}: intervals at {t.confidence * 100:g} % (0.95 = 95 %)")
    from .config_checks import usable_cores

    cores = usable_cores()
    if cfg.threads is not None and cfg.threads > cores:
        out.append(f"threads={cfg.threads} is more than the {cores} CPU cores this process may use: the extra threads "
                   "share cores (the record keeps threads={cfg.threads})".replace("{cfg.threads}", str(cfg.threads)))
    if 0 < cfg.memory_headroom < 1:
        out.append(f"memory_headroom={cfg.memory_headroom:g} lets through points that need more memory than is free")
    return out


def register_configs() -> None:
    """Put the structured configs into Hydra's ConfigStore; called by :func:`bench.app.main`.

    The groups whose options come from a registry (``encoder``, ``llm``, ``backend``, ``tiling``,
    ``reduction``: every registered name is an option, as optimum-benchmark does for its
    backends, so adding a model is one Python entry and no YAML file) are stored by the stage that
    owns the registry, through :data:`GROUP_REGISTRARS` (``bench.models`` adds its own on import);
    this module, the bottom of the import flow, imports no stage. Models registered before this
    call are included. The ``claim_point`` group (``sweep=paper_claims``) is the app's to add, after
    this call: :func:`bench.analysis.claims.register_claim_points`.
    """
    if not GROUP_REGISTRARS:
        raise RuntimeError("bench.config.register_configs: no stage has registered its config groups; "
                           "import bench.models first")
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=BenchConfig)
    for register in GROUP_REGISTRARS:
        register(cs)
    cs.store(group="timing", name="default", node=TimingConf)
    cs.store(group="timing", name="quick", node=QUICK_TIMING)


# ---- where the package's files are ---------------------------------------------------------
#
# Where the package finds the files it ships beside its code: the Hydra config tree and the lock.
#
# ``sweeps/`` (the user-facing, editable config tree) and ``constraints/`` (the lock files) live at
# the top of the repository, as the layout requires. A source checkout or an editable install reads
# them there, so an edit to ``sweeps/`` takes effect at once. A wheel (``pip install .``) cannot
# reach the repository, so ``setup.py`` copies both folders into ``bench/_bundled/`` at build time
# and the installed package reads that copy. There is exactly one source of truth in git; the
# bundled copy exists only inside built wheels.

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "_bundled"


def _checkout_root() -> Path | None:
    """The repository root when this package is imported from a source checkout, else None."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if (root / "sweeps" / "config.yaml").is_file() and pyproject.is_file() \
            and 'name = "fastvlm-bench"' in pyproject.read_text(errors="replace"):
        return root
    return None


def resource_dir(name: str) -> Path:
    """``sweeps`` or ``constraints``: the checkout's folder, else the copy bundled in the wheel."""
    root = _checkout_root()
    if root is not None:
        return root / name
    bundled = BUNDLED_DIR / name
    if bundled.is_dir():
        return bundled
    raise FileNotFoundError(f"fastvlm-bench: no {name}/ folder: neither a source checkout at {PACKAGE_DIR.parent} "
                            f"nor a bundled copy at {bundled} (reinstall the package)")


def sweeps_dir() -> Path:
    """The Hydra config tree (``sweeps/``)."""
    return resource_dir("sweeps")


def constraints_dir() -> Path:
    """The lock files (``constraints/lock.txt``, ``constraints/lock-base.txt``)."""
    return resource_dir("constraints")
