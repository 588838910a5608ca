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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ImageSpec:
    """The image a point starts from, resolved once (its part of the point's plan).

    Untiled: the sample photo as it is (``resize`` false; the timed preprocessing resizes and
    crops it). Tiled: the photo resized (untimed) to ``width`` x ``height``, the image a user
    would have sent, whose shape drives the grid."""

    width: int
    height: int
    resize: bool

    def load(self, photo):
        """``photo`` (the sample photo) as this point's image."""
        if not self.resize or photo.size == (self.width, self.height):
            return photo
        from PIL import Image

        return photo.resize((self.width, self.height), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class TilingPart:
    """The tiling axis's part of a point's plan: the grid (None untiled) and the image."""

    plan: Optional[TilingPlan]
    image: ImageSpec


def image_spec(point) -> ImageSpec:
    w, h = image_wh(point.resolution, point.image_size)
    return ImageSpec(w, h, resize=point.tiling != "none")


def plan_part(point) -> TilingPart:
    """The axis's part of the plan (``bench.measure.plan``). Raises
    :class:`InvalidResolutionError` as :func:`make_plan` does (the point is skipped)."""
    return TilingPart(plan_for(point), image_spec(point))


def source_image(point, photo):
    """The image a point starts from (see :class:`ImageSpec`)."""
    return image_spec(point).load(photo)


def apply(pipe, vlm, point) -> None:
    """The tiling axis (``bench.models.pipeline.AXES``): tiles in the preprocessing, a ``merge``
    stage after the projector. Nothing changes for ``tiling=none``. The grid is the plan's
    (``pipe.extras["tiling_plan"]``, set by :func:`~bench.models.pipeline.build_pipeline` from
    a resolved plan) where there is one, so a measured point does not work it out again."""
    plan = pipe.extras["tiling_plan"] if "tiling_plan" in pipe.extras else plan_for(point)
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

__all__ = ["TILINGS", "PHOTO", "ImageSpec", "TileMerge", "TilingMode", "TilingPart", "TilingPlan", "apply",
           "get_tiling", "image_spec", "image_wh", "make_plan", "parse_image_size", "plan_for", "plan_part",
           "register_tiling", "source_image", "tile_images", "visual_tokens"]
