"""A checkpoint's identity for the point id: its absolute path and a cheap fingerprint."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Tuple

from ..config import ConfigError


def checkpoint_identity(path: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """``(absolute path, fingerprint)`` of a checkpoint, checked before any model is built.

    Checking here (not when the weights are loaded) means a mistyped path costs nothing,
    not a 7B model built for nothing. The fingerprint hashes the name, size and mtime of
    each file (cheap even for 15 GB of shards) so a checkpoint rewritten in place is a new
    point. Raises :class:`ConfigError` naming the path.
    """
    if not path:
        return None, None
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise ConfigError(f"checkpoint {path} does not exist")
    if p.is_dir():
        from ..models.checkpoint import CheckpointError, _weight_files

        try:
            files = list(_weight_files(p))
        except CheckpointError as exc:
            raise ConfigError(f"checkpoint {path}: {exc}") from None
        files += [f for f in sorted(p.glob("*.json")) if f not in files]
    elif p.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        files = [p]
    else:
        raise ConfigError(f"checkpoint {path}: expected a LLaVA-style checkpoint folder or a weights file "
                          "(.safetensors, .bin)")
    h = hashlib.sha1()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return str(p), h.hexdigest()[:12]
