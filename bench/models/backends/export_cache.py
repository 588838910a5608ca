"""Exports cached by content under the results folder, so resume and repeated points never
re-export, and a corrupt or partial entry is found and rebuilt.

Layout: ``<results_dir>/exports/<backend>/<key>/`` with the exported files and a
``manifest.json`` (written last, through the atomic writer) holding the key, the files and each
file's size and SHA-256. An entry is built in a temporary sibling folder and renamed into
place, so a crash mid-export leaves a ``.tmp-*`` folder that is never read (and is removed by
the next build of that key), not a half entry. On every use the manifest is checked: missing,
unreadable, another key, a file missing or of another size or hash -> the entry is removed
and rebuilt, and the record says why (``rebuilt``).

Two processes on one cache (two sweeps sharing a results folder): each key has a lock file
(``<key>.lock``, ``flock``) held while its entry is checked, built and renamed into place, so
the second waits for the first and then uses its entry, and a ``.tmp-*`` folder removed as
stale is never a live process's (it used to be deleted under the first one's feet).

Exporters. A backend lists the exporters it may use, preferred first (ONNX: dynamo, then
TorchScript). The exporter is part of the key: a graph made by the fallback exporter is never
found under the preferred one's key. An exporter that fails for a key (not because of a
signal: :func:`_signal_pending`) leaves ``<key>.failed`` with its error, so later runs go to the
next exporter without trying again; the fallback is logged as a warning and recorded
(``fallback``). Delete the ``.failed`` file to try again.

The key hashes what the export depends on: backend, stage, the module's class and a
fingerprint of its weights (:func:`weights_fingerprint`), the example inputs' shapes and dtypes,
the point's encoder/resolution/LLM/projector/dtype/attention, the checkpoint fingerprint, the
backend's own knobs (opset, exporter) and the versions of torch and the runtimes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ...results.io import atomic_write_text

log = logging.getLogger("fastvlm_bench")
MANIFEST = "manifest.json"
_SAMPLE = 1 << 16


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of the module's parameters and buffers: small tensors whole, large ones by shape
    and an evenly strided sample of 64 Ki values (placeholder matrices are tiled from one seeded
    pattern; a real checkpoint is keyed by its own fingerprint too), so ViT-L costs ~50 ms."""
    h = hashlib.sha256()
    for name, t in list(module.state_dict(keep_vars=False).items()):
        t = t.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        flat = t.reshape(-1)
        if flat.numel() > _SAMPLE:
            flat = flat[:: max(1, flat.numel() // _SAMPLE)]
        h.update(flat.contiguous().view(torch.uint8).cpu().numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()[:16]


def content_key(backend: str, format_version: str, graph, example, point, versions: Dict[str, str],
                extra: Dict[str, Any]) -> str:
    parts = {"backend": backend, "format": format_version, "stage": graph.name,
             "module": type(graph.module).__qualname__, "weights": weights_fingerprint(graph.weights or graph.module),
             "inputs": [[list(t.shape), str(t.dtype)] for t in example],
             "encoder": point.encoder, "resolution": point.resolution, "llm": point.llm,
             "projector": point.projector, "dtype": point.dtype, "attn": point.attn_implementation,
             "checkpoint": point.checkpoint_fingerprint, "torch": torch.__version__,
             "versions": versions, **extra}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_entry(folder: Path, key: str) -> str:
    """Empty when ``folder`` holds a complete entry for ``key``, else why not (one line)."""
    man = folder / MANIFEST
    if not folder.is_dir():
        return "missing"
    try:
        data = json.loads(man.read_text())
    except FileNotFoundError:
        return "no manifest (partial export)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    if data.get("key") != key:
        return f"manifest is for key {data.get('key')!r}"
    for name, meta in (data.get("files") or {}).items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != meta.get("size"):
            return f"{name} has {p.stat().st_size} bytes, the manifest says {meta.get('size')}"
        if _sha256(p) != meta.get("sha256"):
            return f"{name} does not match its SHA-256"
    if not data.get("files"):
        return "the manifest lists no files"
    return ""


def _signal_pending() -> Optional[int]:
    """The signal the harness received and has not handled yet (:mod:`bench.measure.interrupt`,
    read where the harness loaded it: models cannot import measure). A library's ``except
    Exception`` may have swallowed its exception: an export that failed or returned meanwhile
    is neither a fallback nor a cache entry."""
    mod = sys.modules.get("bench.measure.interrupt")
    return mod.pending() if mod is not None else None


def raise_if_signalled() -> None:
    """A harness checkpoint after a library call returns (see :func:`_signal_pending`)."""
    mod = sys.modules.get("bench.measure.interrupt")
    if mod is not None:
        mod.raise_if_pending()


@contextlib.contextmanager
def key_lock(parent: Path, key: str) -> Iterator[None]:
    """The cache key's lock, held by one process at a time (released when the process dies)."""
    with open(parent / f"{key}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _hit(folder: Path, entry: Dict[str, Any], failures: List[str]) -> Tuple[Path, bool]:
    data = json.loads((folder / MANIFEST).read_text())
    entry["exporter"] = data.get("exporter")
    entry["path"] = str(folder)
    if failures:
        entry["fallback"] = "; ".join(failures)
    return folder, False


def get_or_build(root: Path, backend: str, attempts: Sequence[Tuple[str, str]], build: Callable[[Path, str], Any],
                 entry: Dict[str, Any], stage: str = "") -> Tuple[Path, bool]:
    """The folder of the entry (built by ``build(tmp_folder, exporter)`` when absent or broken)
    and whether it was built now. ``attempts``: ``(exporter, key)`` pairs, preferred first.
    ``entry`` gets ``exporter`` (what made the graph), ``fallback`` (why preferred exporters were
    not used) and, when an existing entry was broken, ``rebuilt`` (why)."""
    parent = Path(root) / backend
    parent.mkdir(parents=True, exist_ok=True)
    failures: List[str] = []
    for n, (exporter, key) in enumerate(attempts):
        folder = parent / key
        with key_lock(parent, key):
            why = check_entry(folder, key)
            if not why:
                return _hit(folder, entry, failures)
            failed = parent / f"{key}.failed"
            if failed.is_file():
                reason = failed.read_text().strip()[:300]
                failures.append(f"{exporter} failed before ({reason}; delete {failed} to try again)")
                log.warning("%s %s: the %s exporter failed on this graph before (%s); using the next exporter",
                            backend, stage, exporter, reason)
                continue
            if why != "missing":
                log.warning("export cache %s: %s; rebuilding it", folder, why)
                entry["rebuilt"] = why
                shutil.rmtree(folder, ignore_errors=True)
            for stale in parent.glob(f"{key}.tmp-*"):  # we hold the key's lock: no live process's
                shutil.rmtree(stale, ignore_errors=True)
            tmp = parent / f"{key}.tmp-{os.getpid()}"
            tmp.mkdir()
            try:
                try:
                    made = build(tmp, exporter)
                finally:
                    raise_if_signalled()  # a signal swallowed inside the exporter: nothing cached
                files = {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                         for name in made.files}
                atomic_write_text(tmp / MANIFEST, json.dumps({"key": key, "backend": backend, "stage": stage,
                                                              "exporter": made.exporter, "files": files}, indent=1))
                raise_if_signalled()
                os.replace(tmp, folder)
            except Exception as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if getattr(exc, "interrupts_point", False) or _signal_pending() is not None \
                        or isinstance(exc, (OSError, MemoryError)):
                    raise
                from .errors import one_line

                reason = one_line(exc)
                atomic_write_text(failed, reason + "\n")
                failures.append(f"{exporter} failed: {reason}")
                if n + 1 < len(attempts):
                    log.warning("%s %s: the %s exporter failed (%s); falling back to the %s exporter", backend, stage,
                                exporter, reason, attempts[n + 1][0])
                continue
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        entry["exporter"] = made.exporter
        entry["path"] = str(folder)
        if failures:
            entry["fallback"] = "; ".join(failures)
        return folder, True
    raise RuntimeError("; ".join(failures) or "no exporter")
