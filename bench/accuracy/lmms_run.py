"""Run lmms-eval and fail loudly when it produced no results.

lmms-eval 0.7.3 catches every exception raised while evaluating (a model plugin's own errors
included), prints a traceback, logs ``Error during evaluation: ...`` and still exits 0 without
writing a results file. Run under CI or a sweep script, such a failure looks like success and
later becomes an empty accuracy import. :func:`run_lmms_eval` runs it as a subprocess, passes its
output through, and turns "exit 0 but no new ``*_results.json``" into :class:`LmmsRunError`
carrying lmms-eval's own error message.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

ERROR_LINE = re.compile(r"Error during evaluation: (.*?)(?:\. Please set `--verbosity=DEBUG`.*)?$")


class LmmsRunError(RuntimeError):
    """lmms-eval failed, or exited 0 without writing results."""


def output_path(args: Sequence[str]) -> Optional[Path]:
    """The ``--output_path`` given to lmms-eval (``--output_path X`` or ``--output_path=X``)."""
    for i, a in enumerate(args):
        if a in ("--output_path", "--output-path") and i + 1 < len(args):
            return Path(args[i + 1])
        if a.startswith(("--output_path=", "--output-path=")):
            return Path(a.split("=", 1)[1])
    return None


def new_results_files(folder: Path, since: float) -> List[Path]:
    """``*_results.json`` files under ``folder`` written at or after ``since`` (epoch seconds)."""
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.rglob("*_results.json") if f.is_file() and f.stat().st_mtime >= since)


def run_lmms_eval(args: Sequence[str], python: str = sys.executable) -> List[Path]:
    """Run ``python -m lmms_eval ARGS``; return the results files it wrote, or raise.

    Output is passed through line by line (progress stays visible) while the last
    ``Error during evaluation`` message is kept for the error.
    """
    out = output_path(args)
    if out is None:
        raise ValueError("lmms-eval arguments need --output_path DIR (where its results file is looked for)")
    since = time.time() - 1.0  # file-system timestamps can be coarser than time.time()
    proc = subprocess.Popen([python, "-m", "lmms_eval", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    errors: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
        m = ERROR_LINE.search(line.rstrip())
        if m:
            errors.append(m.group(1).strip())
    rc = proc.wait()
    found = new_results_files(out, since)
    why = f": {errors[-1]}" if errors else ""
    if rc != 0:
        raise LmmsRunError(f"lmms-eval exited {rc}{why}")
    if errors or not found:
        raise LmmsRunError(f"lmms-eval wrote no results file under {out}{why or ' (and logged no error)'}")
    return found
