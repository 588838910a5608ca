"""The model stage's part of the configuration: the Hydra groups made from its registries and
the checks of a point against them.

Why here and not in :mod:`bench.config`: the configuration is the bottom of the import flow
(config -> models -> measure -> ...) and imports no stage, while these groups and checks read
the registries of ``bench.models`` (encoders, LLMs, tilings, backends, token-reduction methods).
Importing ``bench.models`` appends :func:`register_groups` and :func:`check_point` to
:data:`bench.config.GROUP_REGISTRARS` and :data:`bench.config.POINT_CHECKS`; both read the
registries only when called, so the import stays free of torch and timm.
"""
from __future__ import annotations

from typing import Collection, List, Optional

from ..config import GROUP_REGISTRARS, NO_LLM, POINT_CHECKS, BackendConf, BenchConfig, EncoderConf, EndpointConf, \
    LLMConf, TilingConf


def register_groups(cs) -> None:
    """The ``encoder``, ``llm`` (with ``none``: an encoder-only point), ``backend``, ``tiling`` and
    ``reduction`` groups: one option per registered name; a reduction method's option is its own
    typed config (its parameters are ``reduction.*`` knobs)."""
    from .backends import BACKENDS
    from .encoders import ENCODERS
    from .llms import LLMS
    from .reduction import REDUCTIONS
    from .tiling import TILINGS

    for name in ENCODERS.names():
        cs.store(group="encoder", name=name, node=EncoderConf(name=name))
    for name in LLMS.names() + [NO_LLM]:
        cs.store(group="llm", name=name, node=LLMConf(name=name))
    for name in BACKENDS.names():
        cs.store(group="backend", name=name, node=BackendConf(name=name))
    for name in TILINGS.names():
        cs.store(group="tiling", name=name, node=TilingConf(name=name))
    for name in REDUCTIONS.names():
        cs.store(group="reduction", name=name, node=REDUCTIONS.get(name).Conf(name=name))
    from .endpoints import ENDPOINTS

    for name in ENDPOINTS.names() + ["none"]:  # none: an in-process point
        cs.store(group="endpoint", name=name, node=EndpointConf(name=name))


def check_point(cfg: BenchConfig, swept: Optional[Collection[str]], problems: List[str]) -> None:
    """Append the problems of ``cfg`` that only the model registries can see (unknown names, a
    backend's or a reduction method's own rules) to ``problems``, the list
    :func:`bench.config.validate` reports; the reduction method is asked only when nothing else
    is wrong (its rules assume a valid encoder, LLM and resolution)."""
    from .encoders import ENCODERS
    from .llms import LLMS
    from .tiling import TILINGS

    if str(cfg.endpoint.name) != "none":  # a server: none of our models is built
        from .endpoints import ENDPOINTS

        if cfg.endpoint.name not in ENDPOINTS:
            problems.append(f"unknown endpoint kind {cfg.endpoint.name!r}; valid: {', '.join(ENDPOINTS.names())}")
        problems.extend(_image_size_problems(cfg))
        return
    for kind, reg, value in (("encoder", ENCODERS, cfg.encoder.name), ("llm", LLMS, cfg.llm.name),
                             ("tiling", TILINGS, cfg.tiling.name)):
        if value not in reg and not (kind == "llm" and value == NO_LLM):
            extra = f" (or {NO_LLM}: encoder only)" if kind == "llm" else ""
            problems.append(f"unknown {kind} {value!r}; valid: {', '.join(reg.names())}{extra}")
    from .backends import BACKENDS

    if cfg.backend.name not in BACKENDS:
        problems.append(f"unknown backend {cfg.backend.name!r}; valid: {', '.join(BACKENDS.names())}")
    else:
        problems.extend(BACKENDS.get(cfg.backend.name)().problems(cfg))
    if cfg.tiling.tile is not None and (isinstance(cfg.tiling.tile, bool) or cfg.tiling.tile <= 0):
        problems.append(f"tiling.tile must be a positive number of pixels, got {cfg.tiling.tile!r}")
    if cfg.image_size is not None:
        problems.extend(_image_size_problems(cfg))
        if cfg.tiling.name == "none" and not cfg.hf and not {"tiling", "tiling.name"} & set(swept or ()):
            problems.append("image_size needs a tiling mode (tiling=anyres_next|anyres_max_9): without tiling "
                            "the image is centre-cropped to resolution x resolution, whatever its shape")
    if str(cfg.reduction.name) != "none" and str(cfg.tiling.name) != "none":
        problems.append(f"reduction={cfg.reduction.name} cannot be combined with tiling={cfg.tiling.name}: the "
                        "methods' arithmetic (pooling grids, kept-token budgets) assumes one square token grid")
    if not problems and cfg.encoder.name in ENCODERS and not cfg.hf:  # an hf= point has no encoder of ours
        from .reduction.base import check_reduction, to_conf

        problems.extend(check_reduction(to_conf(cfg.reduction), cfg.encoder.name, cfg.llm.name, cfg.resolution,
                                        bool(cfg.compile)))
    if not problems and cfg.encoder.name in ENCODERS and not cfg.hf:
        problems.extend(point_problems(cfg, swept))


def point_problems(cfg: BenchConfig, swept: Optional[Collection[str]]) -> List[str]:
    """Checks that need the encoder's and the LLM's specs: a token budget without a method, an
    answer past the LLM's context, tiles that yield no tokens, and (a single run) a resolution
    or tile the encoder cannot take."""
    from .encoders import InvalidResolutionError, get_encoder_spec
    from .tiling import make_plan

    out: List[str] = []
    single = swept is not None and not swept
    try:
        plan = make_plan(cfg.encoder.name, cfg.resolution, cfg.tiling.name, cfg.tiling.tile, cfg.image_size)
        n = plan.tokens if plan is not None else get_encoder_spec(cfg.encoder.name).num_tokens(cfg.resolution)
    except InvalidResolutionError as exc:
        return [f"{exc} (a single run: nothing to measure)"] if single else []
    if plan is not None and (plan.merged_h <= 0 or plan.merged_w <= 0):
        out.append(f"image_size {plan.image_w}x{plan.image_h} with tiling={plan.mode} tile {plan.tile} px: its tiles "
                   f"yield no tokens (a {plan.merged_w}x{plan.merged_h} feature grid after unpadding); use a less "
                   "extreme aspect ratio")
    # the resolution lines (sweep=token_reduction) pick the resolution giving reduction.tokens
    # tokens without a method: a budget the point has is not ignored, it is what it measures
    if str(cfg.reduction.name) == "none" and cfg.reduction.tokens and cfg.reduction.tokens != n \
            and not {"reduction", "reduction.name"} & set(swept or ()):
        out.append(f"reduction.tokens={cfg.reduction.tokens} needs a method (reduction=pool|random|tome|...): "
                   f"without one the point keeps its {n} visual tokens")
    if cfg.llm.name != NO_LLM and cfg.decode_tokens:
        from .llms import get_llm_spec

        ctx = get_llm_spec(cfg.llm.name).config.get("max_position_embeddings")
        total = n + cfg.prompt_tokens + cfg.decode_tokens
        if ctx and total > int(ctx):
            out.append(f"decode_tokens={cfg.decode_tokens}: {n} visual + {cfg.prompt_tokens} prompt + "
                       f"{cfg.decode_tokens} output tokens = {total} exceed {cfg.llm.name}'s context of {ctx} "
                       "positions (max_position_embeddings)")
    return out


if register_groups not in GROUP_REGISTRARS:
    GROUP_REGISTRARS.append(register_groups)
if check_point not in POINT_CHECKS:
    POINT_CHECKS.append(check_point)


def _image_size_problems(cfg) -> List[str]:
    """``image_size`` that cannot be read as WxH (or one side), for a composed point and a server alike."""
    if cfg.image_size is None:
        return []
    from .tiling import parse_image_size

    try:
        parse_image_size(cfg.image_size)
    except ValueError as exc:
        return [str(exc)]
    return []
