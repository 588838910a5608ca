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
    info = {"type": "cpu", "name": _cpu_model(), "threads": torch.get_num_threads(),
            "logical_cpus": os.cpu_count(), "before": cpu_snapshot()}
    busy = info["before"].get("other_processes_cpu_frac")
    if busy is not None and busy > 0.25:
        warnings.warn(f"other processes are using {100 * busy:.0f}% of the CPUs; CPU timings will be disturbed",
                      RuntimeWarning, stacklevel=2)
    return info


def cpu_snapshot(window_s: float = 0.1) -> Dict[str, Any]:
    """How much of the machine other processes use right now (hygiene record for CPU runs).

    Busy CPU time of the whole system minus this process's own, over a short window while
    this process is idle; the load average would count this sweep's own previous point.
    The window is 0.1 s (10 jiffies a CPU: enough to see the 25 % that warns), taken before and
    after every point: at 0.25 s it was 1.7 % of the default sweep's wall time.
    """
    try:
        import psutil

        me = psutil.Process()
        s0, p0, t0 = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
        time.sleep(window_s)
        s1, p1, t1 = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
        busy = lambda t: sum(t) - t.idle - getattr(t, "iowait", 0.0)  # noqa: E731
        own = (p1.user + p1.system) - (p0.user + p0.system)
        frac = max(0.0, (busy(s1) - busy(s0) - own) / ((t1 - t0) * (os.cpu_count() or 1)))
        l1, _, _ = os.getloadavg()
        return {"other_processes_cpu_frac": round(min(frac, 1.0), 3), "load_avg_1m": round(l1, 2)}
    except Exception:
        return {}


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


def measure_copy_gbps(device: torch.device, mib: int = 1024) -> Optional[float]:
    """Device-to-device copy bandwidth (GB/s, read+write): the roofline's memory ceiling."""
    if device.type != "cuda":
        return None
    n = mib * 2**20 // 4
    src = torch.empty(n, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n * 4 / best / 1e9
