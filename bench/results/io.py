"""The one place the project writes files: atomically, and with one-line errors.

Every file fastvlm-bench writes (records, the results tables, the accuracy CSV, reports and
their figures, compare/gate outputs, the lmms-eval plugin's timings, test checkpoints) goes
through :func:`atomic_write_bytes`/:func:`atomic_write_text`: a temporary name in the same
folder, flushed, fsynced and renamed over the target, so a crash leaves either the old file or
the new one, never half of one. A write that fails (a full disk) raises
:class:`ResultsWriteError` naming the file, and the old file stays as it was. The one
exception is a claim file (``records/<id>.claim``), created with O_EXCL by the store because
its creation is the lock; its write errors still become :func:`write_error`.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Union


class ResultsWriteError(OSError):
    """A results file could not be written (full disk, read-only folder, ...); names the file."""

    def __str__(self) -> str:  # "cannot write PATH: reason", without OSError's "[Errno N]"
        return str(self.strerror)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    ``mkstemp`` creates its file with mode 0600; the file gets ``0666 & ~umask`` instead, as
    ``open()`` would give it, so colleagues on a shared filesystem can read the results.
    Any ``OSError`` (ENOSPC, EROFS, EACCES, ...) becomes :class:`ResultsWriteError` naming
    ``path``; the temporary file is removed and the old ``path`` is left untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, ResultsWriteError):
            raise write_error(path, exc) from None
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_error(path: Union[str, Path], exc: OSError) -> ResultsWriteError:
    """``exc`` (raised while writing ``path``) as the one-line :class:`ResultsWriteError`."""
    return ResultsWriteError(exc.errno or errno.EIO, f"cannot write {path}: {exc.strerror or exc}")
