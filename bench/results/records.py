"""The one result schema: a record per sweep point, and its flat table form.

Everything measured goes through :class:`Record`; the results store writes it as JSON
(one file per point, raw samples included) and as rows of a consolidated table. Reports,
``compare`` and the accuracy join read only the flat columns documented here, so this file
is the contract between the measuring half and the reporting half of the project.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

SCHEMA_VERSION = 2  # 2: projector, checkpoint, timing mode, backend flags, stopping rule, stack

#: Timed stages, in pipeline order. ``ttft`` is image tensor in -> first token id out,
#: measured end to end in the same loop iteration as the stages.
STAGES = ("preprocess", "vision_latency", "projector", "merge", "reduce", "prefill", "ttft")
#: ``merge`` (unpad, newline tokens, interpolation of a tiling mode: bench.models.tiling) is
#: only in tiled points' pipelines, ``reduce`` (bench.models.reduction) only in points whose
#: token-reduction method runs as a stage of its own; their columns are null for the others.
#: With ``decode_tokens`` N > 1 (bench.models.decode): ``decode`` (the N-1 steps after the first
#: token), ``ttst`` (image tensor in -> second token on the host), ``e2e`` (image tensor in ->
#: last token on the host), both spans of the same iteration's marks; ``tpot`` (one sample per
#: iteration: the mean of its decode steps) and ``itl`` (every decode step of every iteration,
#: raw: the ITL percentiles come from these samples).
DECODE_STAGES = ("decode", "ttst", "tpot", "itl", "e2e")
ALL_STAGES = STAGES + DECODE_STAGES

#: Fields that identify a sweep point; two records with equal values measure the same thing.
#: Every knob that changes *what* is run is here: the model parts (encoder, projector, LLM,
#: checkpoint weights), the input, and the runtime (dtype, device, threads, compile, ...).
#: Knobs that change only *how thoroughly* or *what else* is measured are deliberately not:
#: ``timing.*`` (more repeats estimate the same median more tightly), ``count_flops`` and
#: ``measure_peak`` (untimed extra passes; they fill extra columns, not the timings) and
#: ``memory_headroom`` (only decides whether a point is attempted). They are kept in each
#: record's ``settings`` (and the table's ``setting_*`` columns) so a table says how it was
#: measured; use ``force=true`` to re-measure a point with new settings.
POINT_KEYS = (
    "encoder", "resolution", "llm", "dtype", "device", "batch_size", "prompt_tokens",
    "attn_implementation", "compile", "compile_mode", "preprocess", "threads",
    "projector", "checkpoint", "checkpoint_fingerprint",
    "timing_mode", "tf32", "cudnn_benchmark", "channels_last", "extra_work_stage", "extra_work_matmuls",
    "tiling", "tile_size", "image_size",
    "reduction", "reduction_params",
    "decode_tokens",
    "backend", "backend_stages", "backend_options",
    "hf", "hf_fingerprint", "hf_options",
    "allocator",
    "endpoint", "endpoint_server", "endpoint_model", "endpoint_options",
)

#: Point keys added after schema 1, with the value every schema-1 record implicitly had. A key
#: still at that value is left out of the id hash, so points measured before the key existed
#: keep their ids (and are resumed, not re-measured, after an upgrade).
_LATER_KEYS = {"projector": "mlp2x_gelu", "checkpoint": None, "checkpoint_fingerprint": None,
               "timing_mode": "pipelined", "tf32": None, "cudnn_benchmark": None, "channels_last": False,
               "extra_work_stage": None, "extra_work_matmuls": 0,
               "tiling": "none", "tile_size": None, "image_size": None, "reduction": "none", "reduction_params": None,
               "backend": "eager", "backend_stages": None, "backend_options": None,
               "decode_tokens": 0, "hf": None, "hf_fingerprint": None, "hf_options": None, "allocator": "glibc",
               "endpoint": None, "endpoint_server": None, "endpoint_model": None, "endpoint_options": None}

#: Fields that say which configuration a row is, for joins with accuracy.
CONFIG_KEYS = ("encoder", "resolution", "llm")

STATUS_OK, STATUS_ERROR, STATUS_SKIPPED = "ok", "error", "skipped"

#: An endpoint point's flat columns (``endpoint_<key>``), medians over its requests where a
#: server says them: its prompt tokens, the image's tokens (prompt tokens less a text-only
#: request's), its prompt (prefill, image encode included) and per-token decode times, the image
#: encode time from a launched server's log, output tokens per answer, and how the length was
#: held fixed (ignore_eos ...) and the prompt cache kept out, and the model name that answered.
ENDPOINT_COLUMNS = ("prompt_tokens", "image_tokens", "text_prompt_tokens", "server_prompt_ms",
                    "server_decode_per_token_ms", "server_image_encode_ms", "output_tokens", "fixed_output",
                    "cache", "served_model")

#: Runtime versions a backend point records (``env_<name>`` columns; ``compare`` warns when
#: the two sides differ in any of them).
BACKEND_VERSION_KEYS = ("onnxruntime", "openvino", "onnx", "onnxscript")


@dataclass
class PointConfig:
    """What was measured: the resolved knobs of one sweep point."""

    encoder: str  # a registered encoder, or hf:<name> on an hf= point
    resolution: int  # square input in px (with image_size: the image's longer side)
    llm: str  # a registered LLM; none on an encoder-only point; hf:<name> on an hf= point
    dtype: str  # fp32 | bf16 | fp16 (auto resolved)
    device: str  # cpu | cuda | cuda:N (auto resolved)
    batch_size: int = 1  # images per iteration
    #: the LLM-side knobs (prompt_tokens, attn_implementation, projector) are null on an
    #: encoder-only point (``llm=none``), where no LLM or projector is built
    prompt_tokens: Optional[int] = 32
    attn_implementation: Optional[str] = "sdpa"  # sdpa | eager (null on an encoder-only point)
    compile: bool = False  # torch.compile (compile=true; the same point as backend=compile)
    compile_mode: str = "default"  # torch.compile's mode
    preprocess: bool = True  # the preprocess stage is timed (not part of TTFT)
    threads: Optional[int] = None  # CPU threads for torch (null on a GPU)
    projector: Optional[str] = "mlp2x_gelu"  # mlp2x_gelu | linear (null on an encoder-only point)
    #: absolute path of the checkpoint folder/file (None: placeholder weights)
    checkpoint: Optional[str] = None
    #: size and mtime of every weights/config file of the checkpoint, hashed: a checkpoint
    #: rewritten in place gets a new point id even though its path is the same
    checkpoint_fingerprint: Optional[str] = None
    #: pipelined (stages back to back, the latency a user sees) or isolated (synchronised
    #: around every stage: standalone stage latency, as the paper reports it).
    timing_mode: str = "pipelined"
    #: CUDA backend flags, set explicitly per point (cuDNN's TF32 default would otherwise bias
    #: fp32 conv encoders against fp32 ViTs); recorded as null off CUDA, where they do nothing.
    tf32: Optional[bool] = None
    cudnn_benchmark: Optional[bool] = None  # cuDNN picks conv algorithms for the fixed shapes (null off CUDA)
    channels_last: bool = False  # conv encoders in NHWC
    #: Deliberate extra work (N 256x256 fp32 matmuls) inside one stage: a known slowdown.
    extra_work_stage: Optional[str] = None
    extra_work_matmuls: int = 0  # N, the number of those matmuls (0: none)
    #: image-to-token pipeline (bench.models.tiling): none | anyres_next | anyres_max_9
    tiling: str = "none"
    #: tiled points: the tile side in px, the encoder's input (null without tiling)
    tile_size: Optional[int] = None
    #: the image's WxH when not the square ``resolution`` (tiled points; ``resolution`` is then
    #: its longer side); null for a square image
    image_size: Optional[str] = None
    #: Token reduction (bench.models.reduction): the method and its typed parameters as
    #: canonical JSON (sorted keys); ``none``/None is today's path and leaves the id unchanged.
    reduction: str = "none"
    reduction_params: Optional[str] = None  # the method's typed parameters as canonical JSON (null for none)
    #: output tokens per answer: the first from prefill, then decode_tokens - 1 decode steps
    #: (0: the first token only)
    decode_tokens: int = 0
    #: How the stages run (bench.models.backends): eager | compile | onnxruntime | openvino.
    #: ``compile`` is today's ``compile=true`` (the two are one knob: see __post_init__).
    backend: str = "eager"
    #: The stages the backend runs, comma-separated in pipeline order (null: eager, compile).
    backend_stages: Optional[str] = None
    #: The backend's runtime knobs that change what runs, ``key=value`` comma-separated and
    #: sorted (ONNX Runtime: ep, graph_opt, intra_op_threads, opset; OpenVINO: hint, precision,
    #: streams, threads). Null for eager and compile.
    backend_options: Optional[str] = None
    #: A transformers VLM (bench.models.hf): the shipped system's name or the model folder's
    #: absolute path; ``encoder`` and ``llm`` are then ``hf:<name>``. Null for composed points.
    hf: Optional[str] = None
    #: what the folder builds: its config/processor/tokenizer files and weights' names, sizes, mtimes
    hf_fingerprint: Optional[str] = None
    #: processor knobs that change the image's tokens, ``min_pixels=..,max_pixels=..`` (sorted)
    hf_options: Optional[str] = None
    #: The measuring process's memory allocator (bench.measure.allocator); records made before
    #: the knob existed were measured under glibc as found.
    allocator: str = "glibc"
    #: An endpoint point (docs/endpoint.md): the server kind (openai | llama_cpp | vllm | sglang),
    #: the server (its url, or ``launch:llama_cpp:<version>``), the model (its name, or the
    #: launched GGUF's file name) and the knobs that change what is measured (image format; a launched
    #: server's files' fingerprints, threads, slots, context). ``batch_size`` is the concurrency.
    endpoint: Optional[str] = None
    endpoint_server: Optional[str] = None  # the url, or launch:llama_cpp:<version> (null in process)
    endpoint_model: Optional[str] = None  # the served model's name or the launched GGUF's file name (null in process)
    endpoint_options: Optional[str] = None  # key=value, sorted (null in process)

    def __post_init__(self):
        # ``compile=true`` predates the backend axis: records made with it say backend=compile.
        if self.compile and self.backend == "eager":
            self.backend = "compile"

    def point_id(self) -> str:
        """A stable short id: the same knobs always give the same id (used for resume)."""
        knobs = {k: getattr(self, k) for k in POINT_KEYS
                 if not (k in _LATER_KEYS and getattr(self, k) == _LATER_KEYS[k])}
        if self.compile and knobs.get("backend") == "compile":  # said by compile=true already
            del knobs["backend"]
        key = json.dumps(knobs, sort_keys=True)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    def label(self) -> str:
        size = f"{self.image_size or self.resolution}px"
        if self.hf:
            opts = f" {self.hf_options}" if self.hf_options else ""
            out = f" +{self.decode_tokens}tok" if self.decode_tokens else ""
            return f"{self.encoder}@{size}{opts} [{self.dtype}/{self.device} b{self.batch_size}{out}]"
        if self.endpoint:
            out = f" +{self.decode_tokens}tok" if self.decode_tokens else ""
            return f"{self.endpoint}:{self.endpoint_model or 'default'}@{size} [c{self.batch_size}{out}]"
        tiled = f" {self.tiling}" if self.tiling != "none" else ""
        red = "" if self.reduction == "none" else f" {self.reduction}{self.reduction_params or ''}"
        out = f" +{self.decode_tokens}tok" if self.decode_tokens else ""
        return f"{self.encoder}@{size}{tiled}+{self.llm}{red} [{self.dtype}/{self.device} b{self.batch_size}{out}]"


@dataclass
class StageStats:
    """Summary statistics of one timed stage, in milliseconds, with the raw samples kept."""

    median: float  # median of the samples
    mean: float  # mean of the samples
    p10: float  # 10th percentile
    p90: float  # 90th percentile
    iqr: float  # interquartile range
    std: float  # standard deviation
    n: int  # number of samples (timed iterations; for itl, decode steps)
    samples: List[float] = field(default_factory=list)  # the raw samples, ms
    #: 95 % distribution-free interval of the median (order statistics), and its half-width
    #: relative to the median; None below 6 samples, where no such interval exists.
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None  # upper end of that interval
    ci_rel: Optional[float] = None  # the interval's half-width relative to the median


@dataclass
class Record:
    """One sweep point's outcome. Fields that do not apply are ``None``, never zero."""

    sweep: str  # sweep name (the results folder)
    config: PointConfig  # the point: its resolved knobs (PointConfig, below)
    status: str = STATUS_OK  # ok | error (the sweep went on) | skipped (impossible resolution, not enough memory)
    message: str = ""  # the error, or why the point was skipped
    #: Visual tokens that reach the LLM's input (analytic: the encoder's count, after any reduction).
    visual_tokens: Optional[int] = None
    #: With a token reduction: the encoder's own count before it (null without one).
    visual_tokens_encoder: Optional[int] = None
    #: With a reduction inside the LLM (FastV): the visual tokens each LLM layer computes.
    llm_visual_tokens_per_layer: List[int] = field(default_factory=list)
    #: With a token reduction: the method's own time (ms) and the stage it is part of
    #: (``reduce``: its own stage's median; ``vision_latency``/``prefill``: measured apart on the
    #: point's tensors, its work alone, since it runs inside that stage).
    reduction_overhead_ms: Optional[float] = None
    reduction_overhead_in: Optional[str] = None  # the stage the reduction overhead is part of
    #: Visual tokens counted on the real forward pass's output (not the analytical formula).
    visual_tokens_measured: Optional[int] = None
    encoder_channels: Optional[int] = None  # the encoder's output width
    llm_hidden: Optional[int] = None  # the LLM's hidden size (null on an encoder-only point)
    #: Tiled points (bench.models.tiling): the tile grid as COLSxROWS, encoder inputs per image
    #: (grid tiles + the base image), tokens per tile, and the grid's features after unpadding
    #: and the anyres_max_N shrink as WxH; tiles x tile_tokens is the papers' count. Null untiled.
    tiling_grid: Optional[str] = None
    tiles: Optional[int] = None  # encoder inputs per image: grid tiles + the base image
    tile_tokens: Optional[int] = None  # tokens per tile
    tiling_merged_grid: Optional[str] = None  # the grid's features after unpad and shrink, WxH
    stages: Dict[str, StageStats] = field(default_factory=dict)  # per timed stage: statistics, raw samples
    #: FLOPs per stage for one batch (forward only), counted by torch.utils.flop_counter.
    flops: Dict[str, Optional[float]] = field(default_factory=dict)
    #: Parameter counts per model part (vision, projector, llm).
    params: Dict[str, Optional[int]] = field(default_factory=dict)
    peak_memory_mb: Optional[float] = None  # peak device memory over the timed loop (CUDA)
    peak_rss_mb: Optional[float] = None  # peak RSS of the process over the timed loop
    energy_per_inference_j: Optional[float] = None  # NVML energy per batch (null where unsupported)
    avg_power_w: Optional[float] = None  # mean power over the energy loop
    #: Device facts and hygiene (GPU name, driver, clocks, temperatures, other processes).
    device_info: Dict[str, Any] = field(default_factory=dict)
    #: Seconds spent building models, compiling, inside timed regions, and in total.
    build_s: Optional[float] = None
    compile_s: Optional[float] = None  # torch.compile, apart from every timed number
    timed_s: Optional[float] = None  # time inside timed iterations
    warmup_s: Optional[float] = None  # warm-up iterations (stopping rule, phase 1)
    wall_s: Optional[float] = None  # the whole point
    #: Measured device peak (TFLOP/s) used for roofline fractions, when measured.
    device_peak_tflops: Optional[float] = None
    #: The stopping rule's outcome: why the timed loop stopped (target | budget | max_repeats |
    #: partner_left: an interleaved partner finished first, see ``StageTimer.run``),
    #: the warm-up length and why it ended (stable | max_seconds).
    stop_reason: Optional[str] = None
    #: The stage whose interval the stopping rule watched: ``timing.target_stage`` (ttft), or
    #: ``vision_latency`` where the pipeline has no prefill (encoder-only points).
    target_stage: Optional[str] = None
    warmup_iterations: Optional[int] = None  # warm-up length (iterations)
    warmup_reason: Optional[str] = None  # why the warm-up ended: stable | max_seconds
    #: Indices of timed iterations that were contended (CPU) or throttled (GPU), and what the
    #: per-iteration probe saw (cpu_util / nivcsw, or SM clock / throttle reasons).
    disturbed_iterations: List[int] = field(default_factory=list)
    #: With ``timing.turns``: how often another process took a turn during this point's
    #: warm-up and timed loop (0: it ran alone; null: not interleaved).
    turns_taken: Optional[int] = None
    iteration_probes: List[Dict[str, Any]] = field(default_factory=list)  # every timed iteration's probe
    #: torch.compile: graphs, graph breaks and recompiles seen while compiling (null eager).
    compile_info: Dict[str, Any] = field(default_factory=dict)
    #: Idle power before the energy loop, and that loop's length (energy_per_inference_j comes
    #: from a dedicated back-to-back loop without preprocessing).
    idle_power_w: Optional[float] = None
    energy_loop_s: Optional[float] = None  # the energy loop's length
    #: With decode_tokens: KV-cache bytes of the batch at the end of the answer and bytes one
    #: decode step reads (parameters + KV cache, mean over the steps), both analytic
    #: (bench.models.decode); peak memory is peak_memory_mb / peak_rss_mb, measured.
    kv_cache_bytes: Optional[int] = None
    decode_bytes_per_step: Optional[float] = None  # bytes one decode step reads, mean over the steps (analytic)
    #: The point's stages in order, each with what put it there or last replaced how it runs
    #: (``vlm``, a tiling mode, a reduction method, a backend): bench.models.pipeline.
    pipeline: Dict[str, str] = field(default_factory=dict)
    #: Deployment runtimes (bench.models.backends): per backend stage the exporter, export and
    #: first-load seconds (apart from every timed number), whether the export came from the
    #: cache (or was rebuilt, and why), the numerics check against eager (max abs/rel error,
    #: tolerance) and the runtime versions. Empty for eager and compile.
    backend_info: Dict[str, Any] = field(default_factory=dict)
    #: hf= points (bench.models.hf): model type, transformers class, source folder, weights
    #: (placeholder | loaded), tower depths, the processor's token counts (placeholders,
    #: sequence, text, image_text_tokens: placeholders plus tag tokens where the processor adds
    #: them) and input shapes. Empty for composed points.
    hf_info: Dict[str, Any] = field(default_factory=dict)
    #: Endpoint points (bench.measure.endpoint_point): the server's own numbers per request
    #: (prompt tokens, prompt and decode ms, image-encode ms from a launched server's log), the
    #: text-only request's prompt tokens, how the answer's length was held and the cache kept
    #: out, the raw per-request samples. Empty in process.
    endpoint_info: Dict[str, Any] = field(default_factory=dict)
    #: How the point was measured (timing.*, count_flops, measure_peak, memory_headroom):
    #: not part of the point id (see POINT_KEYS), recorded so the table says it.
    settings: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, Any] = field(default_factory=dict)  # versions, commit, host, lock, allocator, Slurm job
    timestamp: str = ""  # when the point was measured
    schema_version: int = SCHEMA_VERSION  # the schema the record was written with

    @property
    def point_id(self) -> str:
        return self.config.point_id()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Record":
        d = dict(d)
        d["config"] = PointConfig(**d["config"])
        # a null stage was not measured (encoder-only points have no ttft): absent, never zero
        d["stages"] = {k: StageStats(**v) for k, v in (d.get("stages") or {}).items() if v is not None}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_row(self) -> Dict[str, Any]:
        """Flatten to one table row; column names are documented in docs/results-schema.md."""
        row: Dict[str, Any] = {"sweep": self.sweep, "point_id": self.point_id}
        row.update(asdict(self.config))
        row.update(status=self.status, message=self.message, visual_tokens=self.visual_tokens,
                   visual_tokens_measured=self.visual_tokens_measured, visual_tokens_encoder=self.visual_tokens_encoder,
                   visual_tokens_llm_mean=(sum(self.llm_visual_tokens_per_layer) / len(self.llm_visual_tokens_per_layer)
                                           if self.llm_visual_tokens_per_layer else None),
                   reduction_overhead_ms=self.reduction_overhead_ms, reduction_overhead_in=self.reduction_overhead_in,
                   encoder_channels=self.encoder_channels, llm_hidden=self.llm_hidden,
                   tiling_grid=self.tiling_grid, tiles=self.tiles, tile_tokens=self.tile_tokens,
                   tiling_merged_grid=self.tiling_merged_grid)
        for stage in ALL_STAGES:
            s = self.stages.get(stage)
            row[f"{stage}_ms"] = s.median if s else None
            for stat in ("mean", "p10", "p90", "iqr", "std"):
                row[f"{stage}_{stat}_ms"] = getattr(s, stat) if s else None
            row[f"{stage}_n"] = s.n if s else None
            for stat in ("ci_low", "ci_high"):
                row[f"{stage}_{stat}_ms"] = getattr(s, stat) if s else None
            row[f"{stage}_ci_rel"] = s.ci_rel if s else None
            row[f"{stage}_samples_ms"] = json.dumps(s.samples) if s else None
        for stage in ("vision_latency", "projector", "merge", "reduce", "prefill", "ttft", "decode", "e2e"):
            fl = self.flops.get(stage)
            row[f"{stage}_gflops"] = fl / 1e9 if fl is not None else None
            s = self.stages.get(stage)
            achieved = (fl / (s.median / 1e3) / 1e12) if (fl and s and s.median > 0) else None
            row[f"{stage}_achieved_tflops"] = achieved
            row[f"{stage}_roofline_frac"] = (achieved / self.device_peak_tflops
                                             if achieved is not None and self.device_peak_tflops else None)
        row.update(self._decode_columns())
        for part in ("vision", "projector", "llm"):
            row[f"{part}_params"] = self.params.get(part)
        ttft = self.stages.get("ttft")
        row["throughput_images_per_s"] = (self.config.batch_size / (ttft.median / 1e3)
                                          if ttft and ttft.median > 0 else None)
        row.update(peak_memory_mb=self.peak_memory_mb, peak_rss_mb=self.peak_rss_mb,
                   energy_per_inference_j=self.energy_per_inference_j, avg_power_w=self.avg_power_w,
                   build_s=self.build_s, compile_s=self.compile_s, timed_s=self.timed_s, warmup_s=self.warmup_s,
                   wall_s=self.wall_s, device_peak_tflops=self.device_peak_tflops, stop_reason=self.stop_reason,
                   target_stage=self.target_stage,
                   warmup_iterations=self.warmup_iterations, disturbed_iterations=len(self.disturbed_iterations),
                   turns_taken=self.turns_taken,
                   idle_power_w=self.idle_power_w, graph_breaks=self.compile_info.get("graph_breaks"),
                   recompiles=self.compile_info.get("recompiles"))
        bi = self.backend_info or {}
        stages = bi.get("stages") or {}
        row["export_s"] = sum(v.get("export_s") or 0.0 for v in stages.values()) if stages else None
        row["backend_load_s"] = sum(v.get("load_s") or 0.0 for v in stages.values()) if stages else None
        row["export_cached"] = all(v.get("cached") for v in stages.values()) if stages else None
        errs = [v["max_abs_err"] for v in stages.values() if v.get("max_abs_err") is not None]
        rels = [v["max_rel_err"] for v in stages.values() if v.get("max_rel_err") is not None]
        row["backend_max_abs_err"] = max(errs) if errs else None
        row["backend_max_rel_err"] = max(rels) if rels else None
        for key in BACKEND_VERSION_KEYS:
            row[f"env_{key}"] = (bi.get("versions") or {}).get(key)
        hi = self.hf_info or {}
        row.update(hf_model_type=hi.get("model_type"), hf_class=hi.get("class"), hf_weights=hi.get("weights"),
                   hf_sequence_tokens=hi.get("sequence_tokens"), hf_image_text_tokens=hi.get("image_text_tokens"),
                   hf_vision_layers=hi.get("vision_layers"))
        ei = self.endpoint_info or {}
        for key in ENDPOINT_COLUMNS:
            row[f"endpoint_{key}"] = ei.get(key)
        row["pipeline"] = " > ".join(f"{k}:{v}" for k, v in self.pipeline.items()) or None
        row["device_name"] = self.device_info.get("name")
        for key in ("torch", "timm", "transformers", "python", "git_commit", "host", "cpu_threads", "lock",
                    "lock_sha256", "stack_sha256"):
            row[f"env_{key}"] = self.env.get(key)
        # process state that moves CPU figures (bench.measure.allocator.process_facts); dicts as JSON
        for key in ("allocator_env", "allocator_library", "thp", "openmp_runtime", "openmp_env", "cpu_affinity",
                    "cpu_governor"):
            value = self.env.get(key)
            row[key] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        for key, value in sorted(self.settings.items()):
            row[f"setting_{key}"] = value
        for key in ("slurm_job_id", "slurm_array_job_id", "slurm_array_task_id", "slurm_node"):
            row[key] = self.env.get(key)  # where a Slurm job measured the point; null elsewhere
        row["timestamp"] = self.timestamp
        row["schema_version"] = self.schema_version
        return row

    def _decode_columns(self) -> Dict[str, Any]:
        """ITL percentiles (from the raw step samples), decode and request throughput, and the
        decode's bytes against the measured copy bandwidth; null without decode."""
        import numpy as np

        b, n = self.config.batch_size, self.config.decode_tokens
        itl, tpot, e2e = self.stages.get("itl"), self.stages.get("tpot"), self.stages.get("e2e")
        out: Dict[str, Any] = {f"itl_{q}_ms": None for q in ("p50", "p90", "p99")}
        if itl and itl.samples:
            for q in (50, 90, 99):
                out[f"itl_p{q}_ms"] = float(np.percentile(itl.samples, q))
        out["decode_tokens_per_s"] = b * 1e3 / tpot.median if tpot and tpot.median > 0 else None
        out["requests_per_s"] = b * 1e3 / e2e.median if e2e and e2e.median > 0 else None
        out["output_tokens_per_s"] = b * n * 1e3 / e2e.median if e2e and e2e.median > 0 else None
        out["kv_cache_bytes"] = self.kv_cache_bytes
        out["decode_bytes_per_step"] = self.decode_bytes_per_step
        gbps = (self.decode_bytes_per_step / (tpot.median / 1e3) / 1e9
                if self.decode_bytes_per_step and tpot and tpot.median > 0 else None)
        out["decode_achieved_gbps"] = gbps
        copy = self.device_info.get("copy_gbps")
        out["decode_bandwidth_frac"] = gbps / copy if gbps is not None and copy else None
        return out


def samples_from_cell(cell: Any) -> List[float]:
    """Raw samples from a table cell (JSON text in CSV, a list in Parquet, or empty)."""
    if cell is None:
        return []
    if isinstance(cell, str):
        return [float(x) for x in json.loads(cell)] if cell.strip() else []
    try:
        return [float(x) for x in cell]
    except TypeError:  # NaN from pandas
        return []
