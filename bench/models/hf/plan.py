"""An ``hf=`` point's part of its plan (``bench.measure.plan``): the folder resolved, its config
checked, its processor loaded, each once.

Why here and once: the folder was resolved and its config read by the point's id
(``resolve_point``), again by the measurement (``AutoConfig``) and a third time by the build
(``check_config``), and the processor was loaded twice with the pixel bounds. The part holds
the resolved objects and the measurement and the build take them from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ...config import ConfigError
from . import HFSource, HFSourceError, check_config, resolve_source
from .inputs import load_processor


@dataclass(frozen=True)
class HFPart:
    """A transformers VLM as a point: where it comes from, what it builds, how its images are
    processed (the processor with the point's pixel bounds applied)."""

    source: HFSource
    config: Any  # the folder's transformers config, checked to build an image-text-to-text model
    model_class: type
    processor: Any
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None

    @property
    def options(self) -> Optional[str]:
        """The point's ``hf_options``: ``max_pixels=..,min_pixels=..`` where set (sorted)."""
        opts = ",".join(f"{k}={v}" for k, v in (("max_pixels", self.max_pixels), ("min_pixels", self.min_pixels))
                        if v)
        return opts or None


def plan_part(value: str, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None) -> HFPart:
    """The source, or a one-line :class:`~bench.config.ConfigError` before anything is built: a
    folder that cannot be a point, or pixel bounds its processor lacks."""
    try:
        source = resolve_source(value)
        config, cls = check_config(source)
        proc = load_processor(source, min_pixels, max_pixels)
    except (HFSourceError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return HFPart(source, config, cls, proc, min_pixels or None, max_pixels or None)
