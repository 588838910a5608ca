"""An ``hf=`` point's part of its plan (``bench.measure.plan``): the folder resolved, its config
checked, its processor loaded (when the point is to be measured), each once.

Why here and once: the folder was resolved and its config read by the point's id
(``resolve_point``), again by the measurement (``AutoConfig``) and a third time by the build
(``check_config``), and the processor was loaded twice with the pixel bounds. The part holds
the resolved objects and the measurement and the build take them from it.
"""
from __future__ import annotations

import functools
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
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None

    @functools.cached_property
    def processor(self) -> Any:
        """The processor with the pixel bounds, loaded on first use and kept: a point found
        measured already (a resumed sweep) never loads it, which is most of its plan's cost
        (seconds for a tiled or dynamic-resolution model). ``bench.measure.runner`` takes it
        before claiming a point, so a processor that cannot be loaded is still one line and
        exit 2 before anything is built."""
        try:
            return load_processor(self.source, self.min_pixels, self.max_pixels)
        except (HFSourceError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    @property
    def options(self) -> Optional[str]:
        """The point's ``hf_options``: ``max_pixels=..,min_pixels=..`` where set (sorted)."""
        opts = ",".join(f"{k}={v}" for k, v in (("max_pixels", self.max_pixels), ("min_pixels", self.min_pixels))
                        if v)
        return opts or None


def plan_part(value: str, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None) -> HFPart:
    """The source, or a one-line :class:`~bench.config.ConfigError` before anything is built: a
    folder that cannot be a point (pixel bounds its processor lacks: when the processor is
    loaded, :attr:`HFPart.processor`)."""
    try:
        source = resolve_source(value)
        config, cls = check_config(source)
    except (HFSourceError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return HFPart(source, config, cls, min_pixels or None, max_pixels or None)
