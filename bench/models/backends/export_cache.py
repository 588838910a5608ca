"""Exports cached by content under the results folder, so resume and repeated points never
re-export, and a corrupt or partial entry is found and rebuilt.

Layout: ``<results_dir>/exports/<backend>/<key>/`` with the exported files and a
``manifest.json`` (written last, through the atomic writer) holding the key, the files and each
file's size and SHA-256. An entry is built in a temporary sibling folder and renamed into
place, so a crash mid-export leaves a ``.tmp-*`` folder that is never read (and is removed by
the next build of that key), not a half entry. On every use the manifest is checked: missing,
unreadable, another key, a file missing or of another size or hash -> the entry is removed
and rebuilt, and the record says why (``rebuilt``).

The key hashes what the export depends on: backend, stage, the module's class and a
fingerprint of its weights (:func:`weights_fingerprint`), the example inputs' shapes and dtypes,
the point's encoder/resolution/LLM/projector/dtype/attention, the checkpoint fingerprint, the
backend's own knobs (opset, exporter) and the versions of torch and the runtimes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

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


def get_or_build(root: Path, backend: str, key: str, build: Callable[[Path], Any],
                 entry: Dict[str, Any], stage: str = "") -> Tuple[Path, bool]:
    """The folder of the entry for ``key`` (built by ``build(tmp_folder)`` when absent or
    broken) and whether it was built now. ``entry`` gets ``exporter`` and, when an existing
    entry was broken, ``rebuilt`` (why)."""
    folder = Path(root) / backend / key
    why = check_entry(folder, key)
    if not why:
        data = json.loads((folder / MANIFEST).read_text())
        entry["exporter"] = data.get("exporter")
        entry["path"] = str(folder)
        return folder, False
    if why != "missing":
        log.warning("export cache %s: %s; rebuilding it", folder, why)
        entry["rebuilt"] = why
        shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f"{key}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.parent / f"{key}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        made = build(tmp)
        files = {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in made.files}
        atomic_write_text(tmp / MANIFEST, json.dumps({"key": key, "backend": backend, "stage": stage, "exporter": made.exporter,
                                                      "files": files}, indent=1))
        try:
            os.replace(tmp, folder)  # another process may have made it meanwhile: keep theirs
        except OSError:
            if check_entry(folder, key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    entry["exporter"] = made.exporter
    entry["path"] = str(folder)
    return folder, True
