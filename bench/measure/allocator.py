"""The memory allocator of the process that measures (``allocator=``), and the other process state
that moves CPU figures: what it is, how a process gets it, and what a record says about it.

Why (issue 33): on a CPU the allocator's state moves a latency by more than anything else the
harness controls. FastViT at 512 px, 2 threads, harness vs ``torch.utils.benchmark`` on the same
module in fresh processes: glibc as found read 479 vs 601 ms (a fresh process gives large
activations back to the kernel on every free and pays page faults on the next iteration; a
process that built and freed large tensors first has raised glibc's dynamic mmap threshold, so
the figure depends on what the process did before). With both glibc thresholds held the pair
agreed to 1-3 %; tcmalloc read 444-488 ms, jemalloc with PyTorch's launcher's ``MALLOC_CONF``
582-819 ms. PyTorch's CPU launcher (``torch.backends.xeon.run_cpu``) preloads tcmalloc by
default; users compare with figures taken that way and ask which allocator to deploy.

The allocators:

- ``glibc``: glibc malloc as the process finds it (dynamic mmap threshold; the harness's
  behaviour before issue 33);
- ``glibc_held``: glibc with ``M_MMAP_THRESHOLD`` = 256 MiB and ``M_TRIM_THRESHOLD`` = 1 GiB
  held from the start (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, read by glibc
  when the process starts; setting a threshold also turns the dynamic adjustment off). Both:
  the mmap threshold alone trims the heap top on every free (497-697 ms, erratic). The default
  (README, "CPU allocator": the figures that chose it); always available;
- ``tcmalloc``, ``jemalloc``: preloaded (``LD_PRELOAD``) into a process started for it,
  found as PyTorch's launcher finds them (plus Debian's multiarch folder and the versioned
  names Debian installs); jemalloc with the launcher's ``MALLOC_CONF`` unless one is set.

A process cannot change its allocator once started, so the state is applied by starting the
measuring process with the right environment: the CLI re-executes itself before importing
anything heavy (:func:`reexec_if_needed`), and a point whose allocator is not the measuring
process's (a sweep over allocators, a submitit/Slurm worker) is measured by a child process
started with it (:mod:`bench.measure.runner`). Which state a process is in is read from what
the kernel says it started with and mapped (``/proc/self/environ``, ``/proc/self/maps``),
never from a flag we set ourselves.

Unknown names and a preloaded allocator that is not installed are one-line errors (exit 2),
never a silent fallback.
"""
from __future__ import annotations

import json
import os
import sys
import sysconfig
from typing import Dict, List, Optional, Sequence

ALLOCATORS = ("glibc", "glibc_held", "tcmalloc", "jemalloc")
DEFAULT = "glibc_held"
#: What records made before the allocator knob existed were measured with (their point ids).
BEFORE = "glibc"
HELD_ENV = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
#: PyTorch's CPU launcher's jemalloc conf (torch/backends/xeon/run_cpu.py, set_memory_allocator).
JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto"
#: File names tried in each folder, in order: run_cpu.py's ``lib{name}.so``, then the names
#: Debian's libtcmalloc-minimal4 / libjemalloc2 install (no unversioned link without -dev).
LIBRARY_NAMES = {"tcmalloc": ("libtcmalloc.so", "libtcmalloc_minimal.so", "libtcmalloc.so.4",
                              "libtcmalloc_minimal.so.4"),
                 "jemalloc": ("libjemalloc.so", "libjemalloc.so.2")}
INSTALL_HINT = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}
#: Folders to search instead of the default list (``:``-separated), e.g. a gperftools build of
#: one's own: only these are searched, so the library measured is the one named.
DIRS_ENV = "FASTVLM_BENCH_ALLOCATOR_DIRS"
OPENMP_LIBS = ("libgomp", "libiomp5", "libomp")
OPENMP_ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_")


class AllocatorError(ValueError):
    """An unknown allocator, or a preloaded one that is not installed (exit 2, one line)."""


def search_dirs() -> List[str]:
    """Where a preloaded allocator is looked for: run_cpu.py's list ($CONDA_PREFIX/lib,
    $VIRTUAL_ENV/lib, ~/.local/lib, /usr/local/lib, /usr/local/lib64, /usr/lib, /usr/lib64) with
    the platform's multiarch folder (/usr/lib/x86_64-linux-gnu) after /usr/lib; or exactly the
    folders of ``$FASTVLM_BENCH_ALLOCATOR_DIRS`` when it is set."""
    if os.environ.get(DIRS_ENV) is not None:
        return [d for d in os.environ[DIRS_ENV].split(":") if d]
    out = [f"{os.environ[v]}/lib" for v in ("CONDA_PREFIX", "VIRTUAL_ENV") if v in os.environ]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    out += [os.path.expanduser("~/.local/lib"), "/usr/local/lib", "/usr/local/lib64", "/usr/lib"]
    out += [f"/usr/lib/{multiarch}"] if multiarch else []
    return out + ["/usr/lib64"]


def check_name(name: str) -> str:
    name = str(name)
    if name not in ALLOCATORS:
        raise AllocatorError(f"unknown allocator {name!r}; valid: {', '.join(ALLOCATORS)}")
    return name


def find_library(name: str) -> str:
    """The preloaded allocator's library: one already in ``LD_PRELOAD``, else the first of
    :data:`LIBRARY_NAMES` in :func:`search_dirs`. :class:`AllocatorError` when there is none."""
    names = LIBRARY_NAMES[name]
    if os.environ.get(DIRS_ENV) is None:
        for item in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":"):
            if os.path.basename(item) in names and os.path.isfile(item):
                return item
    dirs = search_dirs()
    for d in dirs:
        for n in names:
            path = os.path.join(d, n)
            if os.path.isfile(path):
                return path
    raise AllocatorError(f"allocator={name}: no {' / '.join(names)} in {', '.join(dirs) or '(no folders)'}; "
                         f"install it (Debian: apt-get install {INSTALL_HINT[name]}) or pick another allocator")


def wanted_env(name: str) -> Dict[str, str]:
    """The environment variables that put a fresh process under ``name`` (what a record's
    ``allocator_env`` says): {} for glibc, the two thresholds, or LD_PRELOAD (+ MALLOC_CONF)."""
    name = check_name(name)
    if name == "glibc":
        return {}
    if name == "glibc_held":
        return dict(HELD_ENV)
    env = {"LD_PRELOAD": find_library(name)}
    if name == "jemalloc":
        env["MALLOC_CONF"] = os.environ.get("MALLOC_CONF", JEMALLOC_CONF)
    return env


def _is_allocator_lib(path: str) -> bool:
    base = os.path.basename(path)
    return any(base.startswith(n.split(".so")[0] + ".so") for names in LIBRARY_NAMES.values() for n in names)


def child_env(name: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``base`` (default: this process's environment) changed to start a process under
    ``name``: the other allocators' libraries and the held thresholds taken out, then
    :func:`wanted_env` put in (other LD_PRELOAD entries are kept, after ours)."""
    env = dict(os.environ if base is None else base)
    want = wanted_env(name)
    for key, value in HELD_ENV.items():  # ours; a user's own thresholds stay (glibc "as found")
        if env.get(key) == value:
            env.pop(key)
    if name != "jemalloc" and env.get("MALLOC_CONF") == JEMALLOC_CONF:
        env.pop("MALLOC_CONF")
    others = [p for p in env.pop("LD_PRELOAD", "").replace(" ", ":").split(":") if p and not _is_allocator_lib(p)]
    preload = [want.pop("LD_PRELOAD")] if "LD_PRELOAD" in want else []
    if preload + others:
        env["LD_PRELOAD"] = ":".join(preload + others)
    env.update(want)
    return env


# ---- what this process is under (read from the kernel, not from our own flags) --------------

def _start_environ() -> Dict[str, str]:
    """The environment this process started with (what glibc and ld.so read), not os.environ."""
    try:
        raw = open("/proc/self/environ", "rb").read()
    except OSError:
        return dict(os.environ)
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def mapped_libraries() -> List[str]:
    """Paths of the shared objects mapped into this process (``/proc/self/maps``)."""
    paths: List[str] = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and ".so" in parts[5] and parts[5].strip() not in paths:
                    paths.append(parts[5].strip())
    except OSError:
        pass
    return paths


def _mapped(prefixes: Sequence[str], maps: Sequence[str]) -> Optional[str]:
    for p in maps:
        base = os.path.basename(p)
        if any(base.startswith(x + ".so") or base.startswith(x + "-") for x in prefixes):
            return p
    return None


#: True once :func:`hold_in_process` has set glibc's thresholds with ``mallopt`` in this process.
_HELD_IN_PROCESS = False


def hold_in_process() -> bool:
    """``glibc_held`` without starting the process again: ``mallopt(M_MMAP_THRESHOLD, 256 MiB)`` and
    ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``, the settings glibc makes from ``MALLOC_MMAP_THRESHOLD_``
    and ``MALLOC_TRIM_THRESHOLD_`` at start (either one fixed also ends the dynamic mmap threshold).
    For a program that registered its own plug-ins (an encoder, a figure) and then calls
    ``bench.cli.main``: a restart would lose them. The variables are also set in ``os.environ``, so
    processes it starts hold the same state. Returns whether glibc took both."""
    global _HELD_IN_PROCESS
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = libc.mallopt(m_mmap_threshold, int(HELD_ENV["MALLOC_MMAP_THRESHOLD_"])) == 1 and \
        libc.mallopt(m_trim_threshold, int(HELD_ENV["MALLOC_TRIM_THRESHOLD_"])) == 1
    if ok:
        _HELD_IN_PROCESS = True
        os.environ.update(HELD_ENV)
    return ok


def current() -> str:
    """The allocator this process runs under: a preloaded allocator mapped from LD_PRELOAD,
    else glibc_held when it started with both thresholds at the held values (or set them with
    :func:`hold_in_process`), else glibc."""
    env, maps = _start_environ(), mapped_libraries()
    preload = [os.path.basename(p) for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    for name in ("tcmalloc", "jemalloc"):
        stems = [n.split(".so")[0] for n in LIBRARY_NAMES[name]]
        if any(b.split(".so")[0] in stems for b in preload) and _mapped(stems, maps):
            return name
    if _HELD_IN_PROCESS or all(env.get(k) == v for k, v in HELD_ENV.items()):
        return "glibc_held"
    return "glibc"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_list(cpus) -> str:
    """``{0, 1, 2, 5}`` -> ``0-2,5``."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def process_facts() -> Dict[str, object]:
    """What a record says about the process state that moves CPU figures (issue 33): the
    allocator, the environment that reproduces it, the library really mapped, transparent huge
    pages, the OpenMP runtime mapped and its variables, the CPUs this process may run on, and
    their frequency governor (null where the kernel does not expose it, e.g. most VMs)."""
    env, maps = _start_environ(), mapped_libraries()
    name = current()
    if name in ("tcmalloc", "jemalloc"):
        lib = _mapped([n.split(".so")[0] for n in LIBRARY_NAMES[name]], maps)
        alloc_env = {"LD_PRELOAD": lib or ""}
        if name == "jemalloc" and env.get("MALLOC_CONF"):
            alloc_env["MALLOC_CONF"] = env["MALLOC_CONF"]
    else:
        lib = _mapped(["libc"], maps)
        alloc_env = {k: v for k, v in sorted(env.items()) if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"}
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    govs = sorted({g for g in (_read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor") for c in cpus) if g})
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp and "[" in thp:
        thp = thp[thp.index("[") + 1:thp.index("]")]
    return {
        "allocator": name,
        "allocator_env": alloc_env,
        "allocator_library": lib,
        "thp": thp,
        "openmp_runtime": _mapped(OPENMP_LIBS, maps),
        "openmp_env": {k: v for k, v in sorted(env.items()) if k.startswith(OPENMP_ENV_PREFIXES)},
        "cpu_affinity": _cpu_list(cpus) or None,
        "cpu_governor": ",".join(govs) or None,
    }


#: The record's ``env`` keys written by :func:`process_facts`, flat columns of the same name
#: (dicts as JSON text); the allocator itself is the point's ``allocator``.
FACT_COLUMNS = ("allocator_env", "allocator_library", "thp", "openmp_runtime", "openmp_env", "cpu_affinity",
                "cpu_governor")


def as_cell(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


# ---- the CLI: start the measuring process under the allocator asked for ---------------------

def requested(args: Sequence[str]) -> str:
    """The allocator to start a sweep's process under: the one its overrides ask for (the last
    ``allocator=X``), else :data:`DEFAULT`. With several (``allocator=a,b``, ``sweep=allocators``)
    the driver runs under the default and each point whose allocator differs is measured in a
    process under its own (:func:`run_under_allocator`)."""
    value = None
    for a in args:
        key, sep, v = a.partition("=")
        if sep and key.lstrip("+") == "allocator":
            value = v.strip().strip("'\"")
    if value is None or "," in value or "(" in value:
        return DEFAULT
    return check_name(value)


#: Set in the environment of a process this module re-executed, so that a state that does not
#: take (an LD_PRELOAD the loader refused) is an error and not an endless loop of re-executions.
REEXEC_MARK = "FASTVLM_BENCH_ALLOCATOR_REEXEC"


def reexec_if_needed(args: Sequence[str], restart: bool = True) -> None:
    """Before torch is imported: when this process is not under the allocator the sweep asks for,
    start it again (same program, same arguments) under it. Raises :class:`AllocatorError`.

    ``restart=False`` (``bench.cli.main`` called by a program, not run as one): the process keeps
    what it has registered, so ``glibc_held`` is set in place (:func:`hold_in_process`) and a
    preloaded allocator, which no running process can take, is one line naming the way to get it."""
    want = requested(args)
    if current() == want:
        os.environ.pop(REEXEC_MARK, None)
        return
    if not restart:
        if want == "glibc_held" and hold_in_process():
            return
        if want != "glibc":
            raise AllocatorError(f"allocator={want} must be in place when a process starts; this one was started "
                                 "by another program (bench.cli.main called from Python): run the fastvlm-bench "
                                 f"command, or start Python with {json.dumps(wanted_env(want))}")
        return  # glibc as found: what an embedding program has, recorded as it is
    if os.environ.get(REEXEC_MARK) == want:
        raise AllocatorError(f"allocator={want}: the process started with {json.dumps(wanted_env(want))} "
                             f"but runs under {current()} (did the loader refuse the library?)")
    env = child_env(want)
    env[REEXEC_MARK] = want
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "bench", *args], env)


# ---- the runner: a point whose allocator is not this process's ------------------------------

#: The message of a point skipped because its allocator is not installed; such a record is
#: measured again by a later run once the library is there (:func:`now_installed`).
ABSENT = "allocator not installed: "


def now_installed(rec) -> bool:
    """True for a record skipped for a missing allocator whose library is found now."""
    if rec is None or rec.status != "skipped" or not rec.message.startswith(ABSENT):
        return False
    try:
        wanted_env(rec.config.allocator)
        return True
    except AllocatorError:
        return False


def _quote(value) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_quote(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


#: Config groups (bench.config.register_configs): chosen by name, then their fields set.
_GROUPS = ("encoder", "llm", "backend", "tiling", "reduction")


def cli_overrides(cfg) -> List[str]:
    """The overrides that make ``python -m bench sweep=none hydra.mode=RUN ...`` run exactly
    ``cfg`` (a :class:`bench.config.BenchConfig`): each group by name, then every field."""
    from dataclasses import fields, is_dataclass

    out = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            if f.name in _GROUPS:
                out.append(f"{f.name}={value.name}")
            out += [f"++{f.name}.{g.name}={_quote(getattr(value, g.name))}" for g in fields(value)]
        else:
            out.append(f"++{f.name}={_quote(value)}")
    return out
