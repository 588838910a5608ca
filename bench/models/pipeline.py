"""A point's pipeline, assembled: the base path of :mod:`bench.models.stages` edited by every
axis in :data:`~bench.models.stages.AXES`.

Why two modules: the axes (tiling, token reduction, backends, decode) need the pipeline's types
and register themselves into ``AXES``, and the assembly must import the axes so that they have
registered. With both in one module the two imported each other; now the axes import
:mod:`.stages` and only this module imports the axes. The types are re-exported here, the names
every caller has always imported from ``bench.models.pipeline``.
"""
from __future__ import annotations

from .stages import AXES, Flow, Pipeline, Stage, base_pipeline, end_to_end, target_stage

__all__ = ["AXES", "Flow", "Pipeline", "Stage", "base_pipeline", "build_pipeline", "end_to_end", "target_stage"]


def build_pipeline(vlm, point, parts=None) -> Pipeline:
    """The pipeline of ``point`` (a :class:`~bench.results.records.PointConfig`) on ``vlm``.

    ``parts``: the axes' parts of a resolved plan (``bench.measure.plan``: ``tiling_plan``,
    ``reduction``, ``backend``), put in ``pipe.extras`` before the axes run, so that each axis
    takes its part from there instead of working it out from the point again."""
    from . import tiling  # noqa: F401  (registers its axis in AXES on first import)
    from . import decode  # noqa: F401  (registers its axis in AXES)

    pipe = base_pipeline(vlm)
    pipe.extras.update(parts or {})
    for apply in AXES:
        apply(pipe, vlm, point)
    return pipe
