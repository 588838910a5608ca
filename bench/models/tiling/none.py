"""``tiling=none`` (the default): one square ``resolution`` crop of the image, no tiles, no merge.

Today's path, unchanged: the pipeline keeps its three stages and the point its id.
"""
from .base import TilingMode, register_tiling

NONE = register_tiling(TilingMode(
    name="none", description="no tiling: one resolution x resolution crop (LLaVA-1.5, FastVLM)",
))
