"""Device trackers: peak memory, NVML energy/power/clocks, device facts and hygiene, peak FLOP/s.

Everything here degrades to ``None`` where a device or driver does not offer the figure (no
GPU, no NVML, a GPU without an energy counter): a missing figure is null, never zero.
"""
from __future__ import annotations

import os
import platform
import time
import warnings
from typing import Any, Callable, Dict, Optional

import torch


# ---- memory ------------------------------------------------------------------------------
def _read_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryTracker:
    """Peak device memory (CUDA allocator) or peak resident set size (CPU) over a region."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_memory_mb: Optional[float] = None
        self.peak_rss_mb: Optional[float] = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) to the current RSS
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _read_status_kb("VmHWM")
        if hwm is None:
            import resource

            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_rss_mb = hwm / 1024
        return False


# ---- NVML --------------------------------------------------------------------------------
def _nvml_handle(device: torch.device):
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        # respect CUDA_VISIBLE_DEVICES: find the physical device by the UUID torch reports
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            except Exception:
                pass
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


def _nvml(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def nvml_snapshot(device: torch.device) -> Dict[str, Any]:
    """Clocks, temperature, power and processes of a CUDA device right now (empty off-GPU)."""
    h = _nvml_handle(device)
    if h is None:
        return {}
    import pynvml

    procs = _nvml(pynvml.nvmlDeviceGetComputeRunningProcesses, h) or []
    return {
        "sm_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
        "temperature_c": _nvml(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU),
        "power_w": (lambda mw: mw / 1e3 if mw is not None else None)(_nvml(pynvml.nvmlDeviceGetPowerUsage, h)),
        "other_processes": [p.pid for p in procs if p.pid != os.getpid()],
    }


def measure_energy(device: torch.device, call: Callable[[], Any], min_seconds: float = 2.0,
                   idle_seconds: float = 0.5) -> Optional[Dict[str, float]]:
    """Energy per call of ``call`` from NVML's cumulative energy counter (Volta and newer).

    Measured apart from the timed loop, because there the GPU idles during host-side
    preprocessing and between iterations, and a single iteration is shorter than the counter's
    update period: first ``idle_seconds`` of idle power, then ``call`` back to back for at
    least ``min_seconds`` (many counter updates). None off-GPU or without the counter.
    """
    handle = _nvml_handle(device)
    if handle is None:
        return None
    import pynvml

    def read():
        return _nvml(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle), time.perf_counter()

    torch.cuda.synchronize(device)
    (e0, t0) = read()
    time.sleep(idle_seconds)
    (e1, t1) = read()
    call()
    torch.cuda.synchronize(device)
    (e2, t2) = read()
    n = 0
    while n < 3 or time.perf_counter() - t2 < min_seconds:
        call()
        n += 1
    torch.cuda.synchronize(device)
    (e3, t3) = read()
    if None in (e0, e1, e2, e3) or e3 <= e2:
        return None
    joules = (e3 - e2) / 1e3
    return {"joules_per_call": joules / n, "avg_power_w": joules / (t3 - t2),
            "idle_power_w": (e1 - e0) / 1e3 / (t1 - t0), "seconds": t3 - t2, "calls": n}


# ---- device facts ------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> Dict[str, Any]:
    """Static facts about the device, plus a hygiene snapshot on CUDA (warns on other processes)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info: Dict[str, Any] = {"type": "cuda", "name": props.name, "memory_gib": props.total_memory / 2**30,
                                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
        h = _nvml_handle(device)
        if h is not None:
            import pynvml

            info["driver"] = _nvml(pynvml.nvmlSystemGetDriverVersion)
            info["max_sm_clock_mhz"] = _nvml(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM)
        snap = nvml_snapshot(device)
        info["before"] = snap
        if snap.get("other_processes"):
            warnings.warn(f"other processes are using {props.name}: pids {snap['other_processes']}; "
                          "timings may be disturbed", RuntimeWarning, stacklevel=2)
        return info
    # other processes' CPU use: ``measure_point`` adds it over the build and over the measurement
    return {"type": "cpu", "name": _cpu_model(), "threads": torch.get_num_threads(), "logical_cpus": os.cpu_count()}


class OtherCpuUse:
    """How much of the machine other processes used over a window (hygiene record for CPU runs).

    Busy CPU time of the whole system minus this process's own, from construction to
    :meth:`read`; the load average would count this sweep's own previous point. The windows
    are work the point does anyway (the build, then everything from the build to the end of
    the point, timed loop included), not sleeps: two 0.1 s idle windows a point were 0.9 % of
    the default sweep's wall time, and the timed loop is the window that matters. A busy
    neighbour still shows while this process computes: the scheduler gives it its share.
    """

    def __init__(self) -> None:
        self._start = self._counters()

    @staticmethod
    def _counters():
        try:
            import psutil

            return psutil.cpu_times(), _own_cpu_seconds(psutil.Process()), time.perf_counter()
        except Exception:
            return None

    #: The counters tick every 10 ms: a shorter window (a tiny test model's build) reads one
    #: tick as 5-10 % of two CPUs, so :meth:`read` waits for the rest of it.
    MIN_WINDOW_S = 0.1

    def read(self) -> Dict[str, Any]:
        """``other_processes_cpu_frac`` (0-1 of all CPUs) and ``window_s`` since the start."""
        if self._start is not None:
            time.sleep(max(0.0, self._start[2] + self.MIN_WINDOW_S - time.perf_counter()))
        end = self._counters()
        if self._start is None or end is None or end[2] <= self._start[2]:
            return {}
        (s0, own0, t0), (s1, own1, t1) = self._start, end
        busy = lambda t: sum(t) - t.idle - getattr(t, "iowait", 0.0)  # noqa: E731
        own = own1 - own0
        frac = max(0.0, (busy(s1) - busy(s0) - own) / ((t1 - t0) * (os.cpu_count() or 1)))
        return {"other_processes_cpu_frac": round(min(frac, 1.0), 3), "window_s": round(t1 - t0, 2),
                "load_avg_1m": round(os.getloadavg()[0], 2)}


def _own_cpu_seconds(me) -> float:
    """CPU seconds of this process and its children: torch.compile's compile workers are
    subprocesses, and were read as "other processes" using 41 % of the CPUs."""
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system  # children that have ended
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except Exception:  # ended meanwhile: psutil.NoSuchProcess
            pass
    return total


def warn_if_cpus_busy(use: Dict[str, Any], when: str) -> None:
    """A warning when other processes used more than a quarter of the CPUs in ``use``'s window."""
    busy = use.get("other_processes_cpu_frac")
    if busy is not None and busy > 0.25:
        warnings.warn(f"other processes used {100 * busy:.0f}% of the CPUs {when}; CPU timings are disturbed",
                      RuntimeWarning, stacklevel=2)


# ---- peak -------------------------------------------------------------------------------
def measure_peak_tflops(device: torch.device, dtype: torch.dtype, size: Optional[int] = None,
                        repeats: int = 5) -> float:
    """Achievable matmul throughput (TFLOP/s) in ``dtype``: the roofline's compute ceiling."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e12


def measure_copy_gbps(device: torch.device, mib: Optional[int] = None) -> Optional[float]:
    """Copy bandwidth within the device's memory (GB/s, read+write): the roofline's memory
    ceiling, best of 5 copies of ``mib`` MiB (1 GiB on CUDA, 256 MiB on a CPU, both far beyond
    the caches). A CPU copy runs on torch's threads, as the measured point does."""
    cuda = device.type == "cuda"
    n = (mib or (1024 if cuda else 256)) * 2**20 // 4
    src = torch.ones(n, device=device, dtype=torch.float32)  # ones: pages really allocated
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    sync()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n * 4 / best / 1e9
