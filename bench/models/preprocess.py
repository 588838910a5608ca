"""Image preprocessing as a VLM serving stack does it: resize, centre-crop, normalise.

The default input is a real photograph shipped with matplotlib (``grace_hopper.jpg``), so the
preprocessing stage decodes and resizes real pixels without downloading anything.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch


def sample_image_path() -> str:
    from matplotlib import cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load_sample_image():
    from PIL import Image

    with Image.open(sample_image_path()) as im:
        return im.convert("RGB")


def images_to_tensor(images: Sequence, resolution: int, mean: Tuple[float, ...], std: Tuple[float, ...],
                     device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """PIL images -> normalised (B, 3, resolution, resolution) tensor on ``device``."""
    from PIL import Image

    arrays = []
    for im in images:
        im = im.convert("RGB")
        w, h = im.size
        scale = resolution / min(w, h)
        im = im.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                       Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s).to(device=device, dtype=dtype, non_blocking=True)
