"""AnyRes tiling as the originals do it: the grid choice, the tiles plus a base image, and the
merge of the tiles' features (unpad, one newline token per row, the shrink of ``anyres_max_N``).

Why this is its own arithmetic and not "tiles x tokens per tile": the papers' token counts
(LLaVA-NeXT 2880 at 672 px, LLaVA-OneVision 7290 at 1152 px) are tiles x tokens, but the models
that ran feed the LLM another count. They unpad the tile grid's features to the image's aspect
ratio, append a learned newline embedding after every row of the merged grid, and
(``anyres_max_N``) shrink the grid bilinearly when it holds more than N tiles' worth. A square
672 px image in LLaVA-NeXT is 576 (base) + 48*48 + 48 = 2928 tokens; a square 1152 px image in
OneVision is 729 + 81*81 + 81 = 7371.

Followed, step for step (all in (height, width) order, as transformers writes them):

- grid choice: ``select_best_resolution`` -- LLaVA-NeXT ``llava/mm_utils.py`` (LLaVA-VL/LLaVA-NeXT
  @ df179663ae8b83207df100a1f7af24caec633ff9) and ``transformers/image_processing_utils.py``
  (transformers 5.24.0, the lock's);
- tiles: ``resize_and_pad_image`` (fit inside the chosen resolution, ceil, centred on black),
  ``divide_to_patches`` (row-major tiles) and the base image resized to one tile, in
  ``process_anyres_image`` (``llava/mm_utils.py``);
- merge: ``llava/model/llava_arch.py`` (``spatial_unpad`` and the ``anyres_max_N`` branch of
  ``prepare_inputs_labels_for_multimodal``, ``unpad_image``) and transformers'
  ``LlavaNextModel.pack_image_features`` / ``LlavaOnevisionModel.pack_image_features``
  (``models/llava_next/modeling_llava_next.py``, ``models/llava_onevision/modeling_llava_onevision.py``);
- token count: ``LlavaNextProcessor._get_number_of_features`` / ``_get_unpadded_features`` and
  the OneVision processor's (the same plus the shrink), which this module's :class:`TilingPlan`
  reproduces; ``tests/test_tiling.py`` checks it against the installed transformers.

One difference between the two sources: transformers' ``unpad_image`` rounds the scaled side
to 7 decimals before ``int()`` (``int(round(h * scale, 7))``), the original truncates
(``int(h * scale)``), so a float error such as 47.99999999 gives 48 in transformers and 47 in
the original. We follow transformers (the count it tests against, and the model its users run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...registry import Registry


def select_best_resolution(image_hw: Tuple[int, int], pinpoints: Sequence[Sequence[int]]) -> Tuple[int, int]:
    """The pinpoint ``(height, width)`` that keeps most of the image's pixels once the image is
    fitted inside it, and among equals wastes least (transformers' and LLaVA-NeXT's rule)."""
    orig_h, orig_w = image_hw
    best, best_eff, best_waste = None, 0, float("inf")
    for h, w in pinpoints:
        scale = min(w / orig_w, h / orig_h)
        eff = min(int(orig_w * scale) * int(orig_h * scale), orig_w * orig_h)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (h, w), eff, waste
    return best


def unpadded_window(image_hw: Tuple[int, int], grid_hw: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """``(top, height, left, width)`` of the part of a ``grid_hw`` feature map that holds the
    image and not the padding (``unpad_image``): the padding is symmetric, ``(cur - new) // 2``
    on each side of the padded dimension."""
    orig_h, orig_w = image_hw
    cur_h, cur_w = grid_hw
    if orig_w / orig_h > cur_w / cur_h:  # padding was added above and below
        new_h = int(round(orig_h * (cur_w / orig_w), 7))
        pad = (cur_h - new_h) // 2
        return pad, cur_h - 2 * pad, 0, cur_w
    new_w = int(round(orig_w * (cur_h / orig_h), 7))
    pad = (cur_w - new_w) // 2
    return 0, cur_h, pad, cur_w - 2 * pad


@dataclass(frozen=True)
class TilingPlan:
    """Everything a tiling mode decided for one image size: what the preprocessing cuts, what
    the encoder sees and what the merge produces. Pure arithmetic; no tensors."""

    mode: str
    image_w: int
    image_h: int
    tile: int  # tile side in pixels (the encoder's input)
    side: int  # feature-grid side of one tile (tokens per tile = side ** 2)
    best_h: int  # the chosen pinpoint, pixels
    best_w: int
    rows: int
    cols: int
    #: the image's part of the tiles' feature grid after unpadding: (top, height, left, width)
    window: Tuple[int, int, int, int]
    merged_h: int  # after the anyres_max_N shrink (equal to the window when not shrunk)
    merged_w: int

    @property
    def tiles(self) -> int:
        """Encoder inputs per image: the grid's tiles plus the base image."""
        return self.rows * self.cols + 1

    @property
    def tile_tokens(self) -> int:
        return self.side * self.side

    @property
    def shrunk(self) -> bool:
        return (self.merged_h, self.merged_w) != (self.window[1], self.window[3])

    @property
    def tokens(self) -> int:
        """Visual tokens the LLM gets: the base tile's, the merged grid's, one newline per row."""
        return self.tile_tokens + self.merged_h * self.merged_w + self.merged_h

    @property
    def paper_tokens(self) -> int:
        """The papers' figure: tiles x tokens per tile (LLaVA-NeXT's 2880, OneVision's 7290)."""
        return self.tiles * self.tile_tokens

    @property
    def grid(self) -> str:
        """The tile grid as ``COLSxROWS`` (width x height, as image sizes are written)."""
        return f"{self.cols}x{self.rows}"

    @property
    def merged_grid(self) -> str:
        return f"{self.merged_w}x{self.merged_h}"


@dataclass(frozen=True)
class TilingMode:
    """One image-to-token pipeline: its grid pinpoints in tiles, and the anyres_max_N budget.

    ``grids`` are ``(rows, cols)`` in units of one tile, in transformers' order; the pinpoints
    in pixels are ``(rows * tile, cols * tile)``, which for LLaVA-NeXT's CLIP-336 and
    OneVision's SigLIP-384 are exactly their configs' ``image_grid_pinpoints``.
    ``max_tiles`` (``anyres_max_N``): when the unpadded grid holds more than N tiles' worth of
    features (by a ratio over 1.1), it is shrunk bilinearly by that ratio.
    """

    name: str
    description: str
    grids: Tuple[Tuple[int, int], ...] = ()
    max_tiles: Optional[int] = None
    source: str = field(default="", compare=False)

    @property
    def tiled(self) -> bool:
        return bool(self.grids)

    def pinpoints(self, tile: int) -> List[List[int]]:
        return [[r * tile, c * tile] for r, c in self.grids]

    def plan(self, image_w: int, image_h: int, tile: int, side: int) -> Optional[TilingPlan]:
        """The plan for a ``image_w`` x ``image_h`` image and ``tile`` px tiles whose features are
        ``side`` x ``side``; None for a mode that does not tile (``none``)."""
        if not self.tiled:
            return None
        best_h, best_w = select_best_resolution((image_h, image_w), self.pinpoints(tile))
        rows, cols = best_h // tile, best_w // tile
        window = unpadded_window((image_h, image_w), (rows * side, cols * side))
        h, w = window[1], window[3]
        if self.max_tiles is not None:
            ratio = math.sqrt(h * w / (self.max_tiles * side ** 2))
            if ratio > 1.1:
                h, w = int(h // ratio), int(w // ratio)
        return TilingPlan(self.name, image_w, image_h, tile, side, best_h, best_w, rows, cols, window, h, w)


TILINGS: Registry[TilingMode] = Registry("tiling")


def register_tiling(mode: TilingMode) -> TilingMode:
    return TILINGS.add(mode.name, mode)


# ---- the two stages a tiling mode changes -------------------------------------------------------

def tile_images(images: Sequence, plan: TilingPlan, mean: Tuple[float, ...], std: Tuple[float, ...],
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """PIL images of the plan's size -> normalised ``(batch * tiles, 3, tile, tile)``: for each
    image its base image (resized to one tile, aspect not kept, as ``process_anyres_image``
    does), then the grid's tiles in row-major order, cut from the image fitted inside the chosen
    resolution (``resize_and_pad_image``: ceil, at most the target, centred on black)."""
    import numpy as np
    from PIL import Image

    t = plan.tile
    arrays = []
    for im in images:
        im = im.convert("RGB")
        w, h = im.size
        if (w, h) != (plan.image_w, plan.image_h):
            raise ValueError(f"tiling plan is for {plan.image_w}x{plan.image_h} images, got {w}x{h}")
        tw, th = plan.best_w, plan.best_h
        scale_w, scale_h = tw / w, th / h
        if scale_w < scale_h:
            nw, nh = tw, min(math.ceil(h * scale_w), th)
        else:
            nw, nh = min(math.ceil(w * scale_h), tw), th
        canvas = Image.new("RGB", (tw, th), (0, 0, 0))
        canvas.paste(im.resize((nw, nh), Image.Resampling.BICUBIC), ((tw - nw) // 2, (th - nh) // 2))
        grid = np.asarray(canvas, dtype=np.float32).reshape(plan.rows, t, plan.cols, t, 3)
        tiles = grid.transpose(0, 2, 1, 3, 4).reshape(plan.rows * plan.cols, t, t, 3)
        base = np.asarray(im.resize((t, t), Image.Resampling.BICUBIC), dtype=np.float32)[None]
        arrays.append(np.concatenate([base, tiles]) / 255.0)
    x = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s).to(device=device, dtype=dtype, non_blocking=True)


def placeholder_newline(hidden: int, device, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """The learned newline embedding's shape and scale with placeholder values: the originals
    initialise it as ``randn(hidden) / sqrt(hidden)`` (``llava_arch.py``, transformers)."""
    if torch.device(device).type == "meta":
        return torch.empty(hidden, device="meta", dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(hidden, generator=gen) / math.sqrt(hidden)).to(device=device, dtype=dtype)


class TileMerge(nn.Module):
    """Projected tile features ``(batch * tiles, side * side, hidden)`` -> the LLM's visual
    embeddings ``(batch, plan.tokens, hidden)``: base tile's tokens first, then the grid's
    features (tiles laid out as in the image, unpadded, shrunk when over budget), row by row,
    each row followed by the newline embedding (``pack_image_features``), batched over images."""

    def __init__(self, plan: TilingPlan, newline: torch.Tensor):
        super().__init__()
        self.plan = plan
        self.image_newline = nn.Parameter(newline, requires_grad=False)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        p = self.plan
        n, tiles = p.side, p.tiles
        d = embeds.shape[-1]
        x = embeds.reshape(-1, tiles, n * n, d)
        b = x.shape[0]
        base = x[:, 0]
        # (b, rows, cols, n, n, d) -> (b, d, rows, n, cols, n) -> (b, d, rows*n, cols*n)
        g = x[:, 1:].reshape(b, p.rows, p.cols, n, n, d).permute(0, 5, 1, 3, 2, 4)
        g = g.reshape(b, d, p.rows * n, p.cols * n)
        top, h, left, w = p.window
        g = g[:, :, top:top + h, left:left + w]
        if p.shrunk:
            g = nn.functional.interpolate(g, [p.merged_h, p.merged_w], mode="bilinear")
        nl = self.image_newline.to(g.dtype).view(1, d, 1, 1).expand(b, d, p.merged_h, 1)
        g = torch.cat([g, nl], dim=-1).flatten(2).transpose(1, 2)
        return torch.cat([base, g], dim=1)
