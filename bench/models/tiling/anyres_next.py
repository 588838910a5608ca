"""``tiling=anyres_next``: LLaVA-NeXT's AnyRes (``image_aspect_ratio: anyres``,
``mm_patch_merge_type: spatial_unpad``), as released for llava-v1.6 with CLIP ViT-L/14-336.

Grid pinpoints: its configs' ``image_grid_pinpoints``
``[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]`` (also transformers'
``LlavaNextConfig`` default), i.e. 1x2, 2x1, 2x2, 3x1 and 1x3 tiles of 336 px, in
(height, width). Unpadded, one newline per row, no shrink: a square 672 px image is
576 + 48 * 48 + 48 = 2928 tokens (the paper's 2880 is 5 tiles x 576).
Sources: LLaVA-VL/LLaVA-NeXT ``llava/mm_utils.py``, ``llava/model/llava_arch.py``
(@ df179663ae8b83207df100a1f7af24caec633ff9); transformers ``models/llava_next/``.
"""
from .base import TilingMode, register_tiling

ANYRES_NEXT = register_tiling(TilingMode(
    name="anyres_next",
    description="LLaVA-NeXT AnyRes: 1x2/2x1/2x2/3x1/1x3 tiles + base image, unpadded, newline per row",
    grids=((1, 2), (2, 1), (2, 2), (3, 1), (1, 3)),
    source="LLaVA-VL/LLaVA-NeXT llava/mm_utils.py + llava/model/llava_arch.py; transformers models/llava_next",
))
