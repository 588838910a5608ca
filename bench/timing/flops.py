"""FLOPs of a callable, counted by ``torch.utils.flop_counter`` on one real, untimed call."""
from __future__ import annotations

from typing import Any, Callable, Tuple

from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], Any]) -> Tuple[Any, int]:
    """Run ``fn()`` once under the FLOP counter; returns (its result, total FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, int(counter.get_total_flops())
