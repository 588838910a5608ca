"""``tiling=anyres_max_9``: LLaVA-OneVision's ``image_aspect_ratio: anyres_max_9`` with SigLIP-SO400M/14@384.

Grid pinpoints: its configs' ``image_grid_pinpoints: (1x1),...,(6x6)``, every grid of 1..6 by
1..6 tiles of 384 px (transformers' ``LlavaOnevisionConfig`` default lists the same 36, in
(height, width)). After unpadding, when the grid's features exceed 9 tiles' worth by a ratio
``sqrt(h * w / (9 * 27 ** 2)) > 1.1`` they are shrunk bilinearly to
``(int(h // ratio), int(w // ratio))``; then one newline per row. A square 1152 px image is
a 3x3 grid: 729 + 81 * 81 + 81 = 7371 tokens (the paper's 7290 is 10 tiles x 729).
Sources: LLaVA-VL/LLaVA-NeXT ``llava/model/llava_arch.py`` (the ``anyres_max`` branch,
@ df179663ae8b83207df100a1f7af24caec633ff9); transformers ``models/llava_onevision/``
(``pack_image_features``, ``LlavaOnevisionProcessor._get_unpadded_features``).
"""
from .base import TilingMode, register_tiling

ANYRES_MAX_9 = register_tiling(TilingMode(
    name="anyres_max_9",
    description="LLaVA-OneVision anyres_max_9: 1..6 x 1..6 tiles + base image, unpadded, "
                "shrunk to ~9 tiles' worth, newline per row",
    grids=tuple((r, c) for r in range(1, 7) for c in range(1, 7)),
    max_tiles=9,
    source="LLaVA-VL/LLaVA-NeXT llava/model/llava_arch.py; transformers models/llava_onevision",
))
