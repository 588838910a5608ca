"""What every vision encoder exposes: channels, stride or patch, analytical token count,
resolution checks, and a forward that returns visual tokens shaped (batch, tokens, channels).

Token counts are computed from each architecture's own down-sampling arithmetic (kernel,
stride, padding of every layer that shrinks the feature map), so a resolution that is not a
multiple of the stride gets exactly the count the real model produces; tests check the two
agree.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...registry import Registry


def load_timm() -> ModuleType:
    """timm, imported on first use, without ``wandb``.

    Two costs of every sweep process's start that buy nothing:

    - The encoder modules only need timm to *build* a tower. Importing it when the registry is
      filled (for Hydra's config groups) made a config error such as ``encoder=nope`` take as
      long as a measured point: 10.8 s here, 7 s of it imports.
    - ``timm.utils.summary`` does ``try: import wandb / except ImportError: pass`` at import
      time, for ``update_summary(..., log_wandb=True)``, which fastvlm-bench never calls. wandb
      is in the lock (lmms-eval needs it) and takes 1.5-2 s to import here, most of it pydantic
      building its models. (A lazily executed module does not help: torchvision's start-up runs
      ``inspect.getmodule``, which touches every module in ``sys.modules`` and so loads it.)

    So while timm imports, ``sys.modules["wandb"]`` is None, which makes that one ``import
    wandb`` raise ImportError as if wandb were not installed; the entry is removed afterwards, so
    a later ``import wandb`` (lmms-eval's logger) imports the real package. Nothing changes where
    wandb was already imported.
    """
    if "timm" in sys.modules:
        return sys.modules["timm"]
    hide = "wandb" not in sys.modules
    if hide:
        sys.modules["wandb"] = None  # type: ignore[assignment]
    try:
        import timm
    finally:
        if hide and "wandb" in sys.modules and sys.modules["wandb"] is None:
            del sys.modules["wandb"]
    return timm


#: (kernel, stride, padding) of one down-sampling layer
Downsample = Tuple[int, int, int]


class InvalidResolutionError(ValueError):
    """A resolution an encoder cannot take; the message names the nearest valid ones."""


def conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


@dataclass
class EncoderSpec:
    """Static facts about an encoder; building the module is deferred to ``build``."""

    name: str
    description: str
    channels: int
    stride: int  # overall stride (conv) or patch size (ViT)
    kind: str  # "conv" or "vit"
    builder: Callable[[int], nn.Module] = field(repr=False)
    downsamples: Sequence[Downsample] = ()
    min_resolution: int = 32
    max_resolution: int = 4096
    #: ViT only: input must be a multiple of the patch size (else pixels would be dropped)
    strict_patch: bool = False
    prefix_tokens: int = 0  # class/register tokens dropped from the output
    mean: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    timm_name: Optional[str] = None
    paper_resolutions: Tuple[int, ...] = ()
    #: the input size the tower was trained at: the tile size of tiling modes (``tiling.tile``
    #: overrides it); None where tiling needs ``tiling.tile``
    native_resolution: Optional[int] = None
    tiny: bool = False
    #: fuse re-parameterisable branches (MobileOne/FastViT) before inference
    reparameterize: bool = False

    # ---- analytical facts -------------------------------------------------------------
    def grid(self, resolution: int) -> int:
        self.check_resolution(resolution)
        if self.kind == "vit":
            return resolution // self.stride
        n = resolution
        for k, s, p in self.downsamples:
            n = conv_out(n, k, s, p)
        return n

    def num_tokens(self, resolution: int) -> int:
        """Visual tokens for a square ``resolution`` x ``resolution`` image."""
        return self.grid(resolution) ** 2

    def check_resolution(self, resolution: int) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int):
            raise InvalidResolutionError(f"{self.name}: resolution must be a whole number of pixels, got {resolution!r}")
        if resolution <= 0:
            raise InvalidResolutionError(f"{self.name}: resolution must be positive, got {resolution}")
        if resolution < self.min_resolution or resolution > self.max_resolution:
            raise InvalidResolutionError(
                f"{self.name} cannot take {resolution} px: valid resolutions are "
                f"{self.min_resolution}..{self.max_resolution} px"
                + (f" in multiples of {self.stride}" if self.strict_patch else "")
                + f"; nearest valid: {self.nearest_valid(resolution)}")
        if self.strict_patch and resolution % self.stride:
            raise InvalidResolutionError(
                f"{self.name} cannot take {resolution} px: the input must be a multiple of its "
                f"patch size {self.stride} px; nearest valid: {self.nearest_valid(resolution)}")

    def nearest_valid(self, resolution: int) -> List[int]:
        r = max(self.min_resolution, min(self.max_resolution, int(resolution)))
        if not self.strict_patch:
            return [r]
        lo = max(self.min_resolution, (r // self.stride) * self.stride)
        if lo < self.min_resolution:
            lo += self.stride
        hi = lo if lo >= r else lo + self.stride
        out = sorted({v for v in (lo, hi) if self.min_resolution <= v <= self.max_resolution})
        return out

    def measure_tokens_on_meta(self, resolution: int, batch: int = 1) -> Tuple[int, ...]:
        """Output shape of a real forward on the meta device (shapes only, no compute)."""
        with torch.device("meta"):
            enc = self.build(resolution).eval()
        with torch.no_grad():
            return tuple(enc(torch.empty(batch, 3, resolution, resolution, device="meta")).shape)

    # ---- building ---------------------------------------------------------------------
    def build(self, resolution: int) -> "VisionEncoder":
        """Build the encoder for ``resolution`` (on whatever device context is active)."""
        self.check_resolution(resolution)
        return VisionEncoder(self, self.builder(resolution), resolution)


class VisionEncoder(nn.Module):
    """Wraps a backbone so that forward(pixels) -> (batch, tokens, channels)."""

    def __init__(self, spec: EncoderSpec, backbone: nn.Module, resolution: int):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.resolution = resolution

    @property
    def channels(self) -> int:
        return self.spec.channels

    def num_tokens(self, resolution: Optional[int] = None) -> int:
        return self.spec.num_tokens(resolution or self.resolution)

    def prepare_for_inference(self) -> "VisionEncoder":
        """Deploy-time transforms that need real weights (branch fusion); eval mode. Idempotent."""
        if self.spec.reparameterize and not getattr(self, "_reparameterized", False):
            load_timm()
            from timm.utils.model import reparameterize_model

            # in place: timm's default deep-copies the tower first (1 s for FastViTHD here)
            self.backbone = reparameterize_model(self.backbone, inplace=True)
            self._reparameterized = True
        return self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(pixels)
        if feats.dim() == 4:  # (B, C, H, W) feature map
            return feats.flatten(2).transpose(1, 2)
        return feats[:, self.spec.prefix_tokens:, :]


ENCODERS: Registry[EncoderSpec] = Registry("encoder")


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    return ENCODERS.add(spec.name, spec)
