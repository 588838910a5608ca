"""Token reduction: the methods that cut the visual tokens a point's LLM sees, one file each.

Importing this package imports every module in this folder, so adding a method is one new file
with a :func:`~.base.register_reduction` class: it becomes a ``reduction=NAME`` Hydra option
(typed parameters ``reduction.*``), a point key and a stage (or a changed stage) of the point's
pipeline. The axis (:func:`~.base.apply_reduction`) is appended to
:data:`bench.models.pipeline.AXES` here.
"""
import importlib
import pkgutil

from ..pipeline import AXES
from .base import (NONE, REDUCTIONS, ReductionConf, ReductionMethod, ReductionPart, apply_reduction, check_reduction,
                   conf_of_point, method_of, plan_part, point_params, register_reduction)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

if apply_reduction not in AXES:
    AXES.append(apply_reduction)

__all__ = ["NONE", "REDUCTIONS", "ReductionConf", "ReductionMethod", "ReductionPart", "apply_reduction",
           "check_reduction", "conf_of_point", "method_of", "plan_part", "point_params", "register_reduction"]
