"""The gate's configuration as a structured dataclass (``sweeps/gate/*.yaml`` merged onto it).

OmegaConf checks the types and rejects unknown keys at every level: a typo such as
``matched_resolutions:`` would otherwise make its checks silently vanish and the gate pass.
What OmegaConf cannot know (select keys are point keys, metrics are timed stages, ratios are
positive, baselines have thresholds) is checked in :func:`load_gate_config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ..config import InputError, sweeps_dir
from ..results.records import ALL_STAGES, POINT_KEYS

#: vision_latency, projector, prefill, ttft, and with decode_tokens: decode, ttst, tpot, e2e
#: (itl has one sample per step, not per iteration: its median is not a per-request figure).
TIMED_METRICS = tuple(s for s in ALL_STAGES if s not in ("preprocess", "itl"))
DEFAULT_CONFIG = "sweeps/gate/ci_baseline.yaml"


class GateConfigError(InputError):
    """The gate configuration is missing or malformed (exit 2)."""


@dataclass
class PointRef:
    encoder: str = MISSING
    resolution: int = MISSING


@dataclass
class MatchedResolution:
    """At ``resolution``, the target and every baseline need an ok row; tokens and speed-ups checked."""

    resolution: int = MISSING
    baselines: List[str] = field(default_factory=list)
    token_factor: Dict[str, Any] = field(default_factory=dict)  # baseline tokens / target tokens, exactly
    min_speedup: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # overrides the top-level one


@dataclass
class TokenMatched:
    """Points with the same visual-token count: present at that count; speed-ups gated if given."""

    visual_tokens: int = MISSING
    points: List[PointRef] = field(default_factory=list)
    min_speedup: Dict[str, Dict[str, Any]] = field(default_factory=dict)


@dataclass
class GateConfig:
    target: str = MISSING  # the encoder under test, e.g. fastvithd
    sweep: Optional[str] = None
    select: Dict[str, Any] = field(default_factory=dict)  # point key -> value the checked rows must have
    check_visual_tokens: bool = True  # measured tokens == the architecture's analytical count
    min_speedup: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # baseline -> metric -> minimum
    matched_resolution: List[MatchedResolution] = field(default_factory=list)
    token_matched: Optional[TokenMatched] = None


def resolve_config_path(path: str) -> Path:
    """``path`` as given, else a ``sweeps/...`` path inside the package's own config tree (the
    checkout's ``sweeps/`` or the copy bundled in the wheel), so the default works anywhere."""
    p = Path(path)
    if p.exists() or p.is_absolute() or not p.parts or p.parts[0] != "sweeps":
        return p
    alt = sweeps_dir().joinpath(*p.parts[1:])
    return alt if alt.exists() else p


def _unknown_key_message(exc: ConfigKeyError) -> str:
    typ = getattr(exc, "object_type", None)
    valid = [f.name for f in dataclasses.fields(typ)] if dataclasses.is_dataclass(typ) else []
    where = str(getattr(exc, "full_key", "") or "").rpartition(".")[0] or "top level"
    return f"{where}: unknown key {getattr(exc, 'key', '?')!r}; valid: {', '.join(valid)}"


def _check_speedups(mapping: Dict[str, Dict[str, Any]], where: str) -> None:
    for enc, metrics in mapping.items():
        if not metrics:
            raise GateConfigError(f"{where}.{enc}: expected a mapping metric -> minimum speed-up")
        for metric, ratio in metrics.items():
            if metric not in TIMED_METRICS:
                raise GateConfigError(f"{where}.{enc}: unknown metric {metric!r}; known: {', '.join(TIMED_METRICS)}")
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
                raise GateConfigError(f"{where}.{enc}.{metric}: expected a positive number, got {ratio!r}")


def validate(cfg: GateConfig) -> GateConfig:
    unknown = [k for k in cfg.select if k not in POINT_KEYS]
    if unknown:
        raise GateConfigError(f"select: unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(POINT_KEYS)}")
    _check_speedups(cfg.min_speedup, "min_speedup")
    for i, e in enumerate(cfg.matched_resolution):
        where = f"matched_resolution[{i}]"
        _check_speedups(e.min_speedup, f"{where}.min_speedup")
        for enc, f in e.token_factor.items():
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0:
                raise GateConfigError(f"{where}.token_factor.{enc}: expected a positive number, got {f!r}")
        missing = [b for b in e.baselines if b not in e.min_speedup and b not in cfg.min_speedup]
        if missing:
            raise GateConfigError(f"{where}: no min_speedup for baseline(s) {', '.join(missing)}")
    if cfg.token_matched is not None:
        if not cfg.token_matched.points:
            raise GateConfigError("token_matched.points: expected a non-empty list of {encoder, resolution}")
        _check_speedups(cfg.token_matched.min_speedup, "token_matched.min_speedup")
    if not cfg.matched_resolution and cfg.token_matched is None and not cfg.check_visual_tokens:
        raise GateConfigError("gate config checks nothing: give matched_resolution, token_matched or "
                              "check_visual_tokens")
    return cfg


def load_gate_config(path: str) -> GateConfig:
    """Read, type-check and validate a gate config; every problem is one GateConfigError line."""
    import yaml

    p = resolve_config_path(path)
    if not p.is_file():
        raise GateConfigError(f"gate config {path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise GateConfigError(f"gate config {p}: not valid YAML ({(str(exc).strip().splitlines() or [''])[0]})") from None
    try:
        return parse_gate_config(raw)
    except GateConfigError as exc:
        raise GateConfigError(f"gate config {p}: {exc}") from None


def parse_gate_config(raw: Any) -> GateConfig:
    """A parsed YAML mapping -> a checked :class:`GateConfig`; raises GateConfigError (one line)."""
    if not isinstance(raw, dict):
        raise GateConfigError("must be a YAML mapping")
    try:
        cfg: GateConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GateConfig), raw))  # type: ignore
    except ConfigKeyError as exc:
        raise GateConfigError(_unknown_key_message(exc)) from None
    except OmegaConfBaseException as exc:
        msg = (str(exc).strip().splitlines() or [""])[0]
        key = getattr(exc, "full_key", None)
        raise GateConfigError(f"{key + ': ' if key else ''}{msg}") from None
    return validate(cfg)
