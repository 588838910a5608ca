"""A claims file read as strictly as a record: its schema, and the one reader of it.

Why its own module: a claims file is user input (``FASTVLM_BENCH_CLAIMS``, ``claims
--claims``), read by every sweep (``sweep=paper_claims``' config group is made at start-up)
and by ``claims`` and ``report``. A malformed field -- a ``tokens`` that is not a number, a list
or a mapping where a number belongs, a bad ``resolution`` inside a paper reference -- used to be
a traceback (exit 1). Each is now one line naming the file, the claim and the field
(:class:`~bench.config.InputError`, exit 2); ids are compared as text (``1`` and ``"1"`` are
duplicates).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..config import InputError, TimingConf

CLAIMS_FILE = Path(__file__).resolve().parent.parent / "data" / "claims" / "fastvlm_paper.yaml"
#: Another claims file for ``sweep=paper_claims`` (and the default of ``fastvlm-bench claims``):
#: the config groups are made before Hydra reads the command line, so this is an environment
#: variable, not a Hydra key. Your own comparisons, or the tests' tiny-model claims.
CLAIMS_ENV = "FASTVLM_BENCH_CLAIMS"
METRICS = ("ttft", "vision_latency", "vision_params")
ENCODER_ONLY = "none"  # llm=none: an encoder-only point
SIDE_KEYS = ("encoder", "resolution", "llm", "tiling", "reduction", "tokens", "backend", "timing")
CLAIM_KEYS = ("id", "title", "metric", "fast", "baseline", "paper", "note")
PAPER_KEYS = ("fast", "baseline", "says")
REF_KEYS = ("row", "table", "encoder", "resolution", "llm")
PathLike = Union[str, Path]


@dataclass(frozen=True)
class Side:
    """One configuration of a claim. ``timing`` (stopping-rule overrides for this point in
    ``sweep=paper_claims``) is how it is measured, not what: it is not compared when matching.
    Every other knob of a matching row is the default (:func:`bench.analysis.claims._rows`)."""

    encoder: str
    resolution: int
    llm: str
    tiling: str = "none"
    #: a token reduction (bench.models.reduction) and its budget, reduction.tokens
    reduction: str = "none"
    tokens: int = 0
    backend: str = "eager"
    timing: Tuple[Tuple[str, Any], ...] = ()

    def label(self) -> str:
        tiles = "" if self.tiling == "none" else f" {self.tiling}"
        tiles += "" if self.reduction == "none" else f" {self.reduction}->{self.tokens}"
        tiles += "" if self.backend == "eager" else f" [{self.backend}]"
        llm = " (encoder only)" if self.llm == ENCODER_ONLY else f"+{self.llm}"
        return f"{self.encoder}@{self.resolution}{tiles}{llm}"

    def point_name(self) -> str:
        """The point's option name in the ``claim_point`` config group."""
        tiles = "" if self.tiling == "none" else f"_{self.tiling}"
        tiles += "" if self.reduction == "none" else f"_{self.reduction}{self.tokens}"
        tiles += "" if self.backend == "eager" else f"_{self.backend}"
        return f"{self.encoder}_{self.resolution}{tiles}_{self.llm}"


@dataclass
class Claim:
    id: str
    title: str
    metric: str
    fast: Side
    baseline: Side
    paper_fast: Dict[str, Any] = field(default_factory=dict)
    paper_baseline: Dict[str, Any] = field(default_factory=dict)
    says: str = ""  # the paper's own wording of the claim, when it states one
    note: str = ""


def _whole(v: Any, where: str, minimum: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        kind = "a positive whole number" if minimum > 0 else "a whole number >= 0"
        raise InputError(f"{where} must be {kind}, got {v!r}")
    return v


def _text(v: Any, where: str) -> str:
    if not isinstance(v, (str, int)) or isinstance(v, bool) or str(v).strip() == "":
        raise InputError(f"{where} must be a non-empty name, got {v!r}")
    return str(v)


def _mapping(v: Any, where: str, keys: Tuple[str, ...], what: str) -> Dict[str, Any]:
    if not isinstance(v, dict):
        raise InputError(f"{where} must be a mapping ({what}), got {v!r}")
    unknown = sorted(map(str, set(v) - set(keys)))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(keys)}")
    return v


def _side(raw: Any, where: str) -> Side:
    raw = _mapping(raw, where, SIDE_KEYS, "encoder, resolution, llm")
    missing = [k for k in ("encoder", "resolution", "llm") if k not in raw]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    knobs = {f.name for f in fields(TimingConf)}
    timing = _mapping(raw.get("timing") or {}, f"{where}.timing", tuple(sorted(knobs)), "timing.* keys")
    for k, v in timing.items():
        if not isinstance(v, (int, float, str)) or isinstance(v, bool):
            raise InputError(f"{where}.timing.{k} must be a number, got {v!r}")
    return Side(encoder=_text(raw["encoder"], f"{where}.encoder"),
                resolution=_whole(raw["resolution"], f"{where}.resolution", 1),
                llm=_text(raw["llm"], f"{where}.llm"), tiling=_text(raw.get("tiling", "none"), f"{where}.tiling"),
                reduction=_text(raw.get("reduction", "none"), f"{where}.reduction"),
                tokens=_whole(raw.get("tokens", 0), f"{where}.tokens", 0),
                backend=_text(raw.get("backend", "eager"), f"{where}.backend"), timing=tuple(sorted(timing.items())))


def _reference(raw: Any, where: str) -> Dict[str, Any]:
    """A paper reference: ``{row: R3}`` or ``{table, encoder, resolution[, llm]}``."""
    ref = _mapping(raw if raw is not None else {}, where, REF_KEYS, "row, or table/encoder/resolution")
    if "row" in ref:
        _text(ref["row"], f"{where}.row")
    elif ref:
        for k in ("table", "encoder"):
            if k not in ref:
                raise InputError(f"{where}: missing {k} (or give row)")
            _text(ref[k], f"{where}.{k}")
        _whole(ref.get("resolution"), f"{where}.resolution", 1)
        if "llm" in ref:
            _text(ref["llm"], f"{where}.llm")
    return dict(ref)


def _claim(raw: Any, where: str) -> Claim:
    raw = _mapping(raw, where, CLAIM_KEYS, "id, title, metric, fast, baseline")
    for k in ("id", "title", "metric", "fast", "baseline"):
        if k not in raw:
            raise InputError(f"{where}: missing {k}")
    cid = _text(raw["id"], f"{where}.id")
    where = f"{where} (id {cid})"
    if raw["metric"] not in METRICS:
        raise InputError(f"{where}.metric must be one of {', '.join(METRICS)}, got {raw['metric']!r}")
    paper = _mapping(raw.get("paper") or {}, f"{where}.paper", PAPER_KEYS, "fast, baseline, says")
    for k in ("title", "note"):
        if k in raw and not isinstance(raw[k], (str, int, float)):
            raise InputError(f"{where}.{k} must be text, got {raw[k]!r}")
    if "says" in paper and not isinstance(paper["says"], str):
        raise InputError(f"{where}.paper.says must be text, got {paper['says']!r}")
    return Claim(id=cid, title=str(raw["title"]), metric=raw["metric"],
                 fast=_side(raw["fast"], f"{where}.fast"), baseline=_side(raw["baseline"], f"{where}.baseline"),
                 paper_fast=_reference(paper.get("fast"), f"{where}.paper.fast"),
                 paper_baseline=_reference(paper.get("baseline"), f"{where}.paper.baseline"),
                 says=str(paper.get("says", "")), note=str(raw.get("note", "")))


def claims_path(path: Optional[PathLike] = None) -> Path:
    return Path(path) if path is not None else Path(os.environ.get(CLAIMS_ENV) or CLAIMS_FILE)


def load_claims(path: Optional[PathLike] = None) -> List[Claim]:
    """The claims of ``path`` (default: ``$FASTVLM_BENCH_CLAIMS``, else the paper's,
    :data:`CLAIMS_FILE`); a bad file is an :class:`~bench.config.InputError` naming the file,
    the claim and the field."""
    import yaml

    path = claims_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the claims file ({exc.strerror or exc})") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: needs a non-empty list under 'claims'")
    out: List[Claim] = []
    seen: Dict[str, int] = {}
    for i, raw in enumerate(entries):
        claim = _claim(raw, f"{path}: claims[{i}]")
        if claim.id in seen:  # compared as text: 1 and "1" are one id
            raise InputError(f"{path}: claims[{i}]: duplicate id {claim.id!r} (claims[{seen[claim.id]}] has it)")
        seen[claim.id] = i
        out.append(claim)
    return out
