"""Image-to-token pipelines (``tiling=``): how an image becomes the encoder's input and how the
encoder's output becomes the LLM's visual tokens. One file per mode, each registering a
:class:`~.base.TilingMode`; importing this package imports them all and appends :func:`apply`
to :data:`bench.models.pipeline.AXES`, so adding a mode is one file here.

A tiling mode changes two parts of a point's path and nothing else:

- the *preprocessing* (``pipeline.preprocess``): the image is cut into the tiles of its grid
  plus a base image, so the encoder runs on a batch of ``tiles`` inputs of ``tile_size`` px, as
  the originals do;
- a ``merge`` stage after ``projector`` (unpad, newline tokens, the ``anyres_max_N`` shrink),
  timed on its own and part of TTFT; the record's ``pipeline`` says ``merge:<mode>``.

The image is ``resolution`` x ``resolution`` unless ``image_size=WxH`` (or ``photo``, the
sample photo's own 512x600) gives its shape; its aspect ratio drives the grid and the unpadding.
"""
import importlib
import pkgutil
import re
from typing import Optional, Tuple

from ..encoders import InvalidResolutionError, get_encoder_spec
from ..stages import AXES, Stage
from .base import TILINGS, TileMerge, TilingMode, TilingPlan, placeholder_newline, register_tiling, tile_images

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
PHOTO = "photo"  # image_size=photo: the sample photo's own size


def get_tiling(name: str) -> TilingMode:
    return TILINGS.get(name)


def parse_image_size(value: str) -> Tuple[int, int]:
    """``"WxH"`` -> ``(W, H)``; ``"photo"`` -> the sample photo's size. ValueError otherwise."""
    if str(value).strip().lower() == PHOTO:
        from ..preprocess import load_sample_image

        return load_sample_image().size
    m = _SIZE.match(str(value))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"image_size must be WxH in pixels (e.g. 1152x648) or {PHOTO!r}, got {value!r}")
    return int(m.group(1)), int(m.group(2))


def image_wh(resolution: int, image_size: Optional[str]) -> Tuple[int, int]:
    """The image's (width, height): ``image_size`` if given, else the square ``resolution``."""
    return parse_image_size(image_size) if image_size else (int(resolution), int(resolution))


def make_plan(encoder: str, resolution: int, tiling: str = "none", tile_size: Optional[int] = None,
              image_size: Optional[str] = None) -> Optional[TilingPlan]:
    """The tiling plan of a point's knobs (None for ``tiling=none``). Raises
    :class:`InvalidResolutionError` (the point is skipped) when the encoder has no tile size or
    cannot take it."""
    mode = get_tiling(tiling or "none")
    if not mode.tiled:
        return None
    spec = get_encoder_spec(encoder)
    if tile_size is None:
        raise InvalidResolutionError(f"{encoder} has no native input size to cut tiles of; set tiling.tile=N (px)")
    spec.check_resolution(int(tile_size))
    w, h = image_wh(resolution, image_size)
    return mode.plan(w, h, int(tile_size), spec.grid(int(tile_size)))


def plan_for(point) -> Optional[TilingPlan]:
    """The plan of a :class:`~bench.results.records.PointConfig`."""
    return make_plan(point.encoder, point.resolution, point.tiling, point.tile_size, point.image_size)


def visual_tokens(encoder: str, resolution: int, tiling: str = "none", tile_size: Optional[int] = None,
                  image_size: Optional[str] = None) -> int:
    """Analytical visual tokens per image for these knobs: the encoder's formula without
    tiling, the merged count with it (what ``gate`` checks the measured count against)."""
    plan = make_plan(encoder, resolution, tiling, tile_size, image_size)
    return plan.tokens if plan is not None else get_encoder_spec(encoder).num_tokens(int(resolution))


def source_image(point, photo):
    """The image a point starts from: the sample photo as it is without tiling (the timed
    preprocessing resizes and crops it); for a tiled point, the photo resized (untimed) to the
    point's image size: the image a user would have sent, whose shape drives the grid."""
    if point.tiling == "none":
        return photo
    from PIL import Image

    size = image_wh(point.resolution, point.image_size)
    return photo if photo.size == size else photo.resize(size, Image.Resampling.BICUBIC)


def apply(pipe, vlm, point) -> None:
    """The tiling axis (``bench.models.pipeline.AXES``): tiles in the preprocessing, a ``merge``
    stage after the projector. Nothing changes for ``tiling=none``."""
    plan = plan_for(point)
    if plan is None:
        return
    spec = vlm.encoder.spec
    pipe.preprocess = lambda images: tile_images(images, plan, spec.mean, spec.std, vlm.device, vlm.dtype)
    pipe.preprocess_owner = point.tiling
    pipe.extras["tiling_plan"] = plan
    if "projector" in pipe.names():  # the originals merge in the LLM's width, after the projector
        merge = TileMerge(plan, placeholder_newline(vlm.projector[-1].out_features, vlm.device, vlm.dtype))

        def run(f) -> None:
            f.embeds = merge(f.embeds)

        pipe.insert_after("projector", Stage("merge", run, owner=point.tiling))
        return
    # encoder only (llm=none): no projector to merge after; the same merge on the encoder's
    # features (a newline of its width), so the point still ends at the tokens an LLM would get
    merge = TileMerge(plan, placeholder_newline(vlm.encoder.channels, vlm.device, vlm.dtype))

    def run_on_features(f) -> None:
        f.embeds = merge(f.feats)

    pipe.insert_after("vision_latency", Stage("merge", run_on_features, owner=point.tiling))


if apply not in AXES:
    AXES.insert(0, apply)  # first: tiling decides what the encoder sees (see AXES)

__all__ = ["TILINGS", "PHOTO", "TileMerge", "TilingMode", "TilingPlan", "apply", "get_tiling", "image_wh",
           "make_plan", "parse_image_size", "plan_for", "register_tiling", "source_image", "tile_images",
           "visual_tokens"]
