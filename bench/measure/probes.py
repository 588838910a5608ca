"""Per-iteration interference probes: was this iteration disturbed by something else?

A median hides nothing if nobody looks at the iterations. The timer calls a probe around each
timed iteration (outside the timed marks), and the point's record keeps what it saw:

- CPU: the process's CPU time against wall time x threads (``cpu_util``) and the involuntary
  context switches (``nivcsw``: the kernel took a core away from us). An iteration is
  *contended* when its ``cpu_util`` falls below ``CONTENDED_FRACTION`` of the run's 90th
  percentile (the run's own uncontended level). ``nivcsw`` is recorded, not used: on a quiet
  2-core machine an uncontended iteration (cpu_util 0.97-0.99) still sees 10-150 involuntary
  switches, growing with its length (scheduler ticks), so a count says little by itself.
- GPU: the SM clock and NVML's clock-throttle reasons after each iteration; an iteration is
  *throttled* when a reason other than idle or application-clock setting is active.
"""
from __future__ import annotations

import resource
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

CONTENDED_FRACTION = 0.75


class CpuProbe:
    def __init__(self, threads: int):
        self.threads = max(1, int(threads))

    def begin(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._nivcsw = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw

    def end(self) -> Dict[str, Any]:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        nivcsw = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - self._nivcsw
        return {"cpu_util": cpu / (wall * self.threads) if wall > 0 else None, "nivcsw": nivcsw}


class GpuProbe:
    """NVML clocks and throttle reasons after each iteration (nothing if NVML is unavailable)."""

    #: Reasons that do not mean the GPU was slowed by heat, power or another client.
    BENIGN = ("GpuIdle", "ApplicationsClocksSetting")

    def __init__(self, device: torch.device):
        from .trackers import _nvml_handle

        self.handle = _nvml_handle(device)

    def begin(self) -> None:
        pass

    def end(self) -> Dict[str, Any]:
        if self.handle is None:
            return {}
        import pynvml

        from .trackers import _nvml

        reasons = _nvml(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, self.handle) or 0
        names = [n[len("nvmlClocksThrottleReason"):] for n in dir(pynvml)
                 if n.startswith("nvmlClocksThrottleReason") and n not in ("nvmlClocksThrottleReasonAll",
                                                                             "nvmlClocksThrottleReasonNone")
                 and isinstance(getattr(pynvml, n), int) and reasons & getattr(pynvml, n)]
        return {"sm_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, self.handle, pynvml.NVML_CLOCK_SM),
                "throttle": sorted(set(names) - set(self.BENIGN))}


def probe_for(device: torch.device, threads: Optional[int]):
    return GpuProbe(device) if device.type == "cuda" else CpuProbe(threads or torch.get_num_threads())


def disturbed_iterations(probes: List[Dict[str, Any]]) -> List[int]:
    """Indices of timed iterations that were contended (CPU) or throttled (GPU)."""
    out = []
    utils = [p["cpu_util"] for p in probes if p.get("cpu_util") is not None]
    floor = CONTENDED_FRACTION * float(np.percentile(utils, 90)) if utils else None
    for i, p in enumerate(probes):
        if p.get("throttle"):
            out.append(i)
        elif floor is not None and p.get("cpu_util") is not None and p["cpu_util"] < floor:
            out.append(i)
    return out
