"""Results store: one JSON file per sweep point plus a consolidated table, written atomically.

It knows nothing about timing or models; it only keeps :class:`bench.results.records.Record` objects
safe. Layout under ``results/<sweep>/``::

    records/<point_id>.json   one record each (raw samples included)
    results.csv               consolidated table, one row per record
    results.parquet           the same table for pandas/pyarrow

    records/<point_id>.claim  held while a process measures that point (pid, host, time)
    records/corrupt/          records that could not be parsed or fail the schema checks of
                              bench.results.validate, moved aside (never deleted)

Every file is written through :mod:`bench.results.io` (temporary name, fsync, rename), so a
crash leaves either the old file or the new one, never half of one; a write that fails (a
full disk) raises :class:`~bench.results.io.ResultsWriteError` naming the file.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

import pandas as pd

from .io import atomic_write_bytes, atomic_write_text, write_error
from .records import STATUS_OK, STATUS_SKIPPED, Record
from .validate import RecordInvalid, check_record

TABLE_CSV = "results.csv"
TABLE_PARQUET = "results.parquet"
RECORDS_DIR = "records"
CORRUPT_DIR = "corrupt"
CLAIM_SUFFIX = ".claim"
#: A claim from another host cannot be checked for a live process; after this long it is
#: taken to be left over from a crashed job (no point takes a day to measure).
CLAIM_STALE_S = 24 * 3600

log = logging.getLogger("fastvlm_bench")


class CorruptRecordError(ValueError):
    """A record file exists but cannot be read as a record; names the file.

    ``unreadable`` is True when the file could not even be opened (permissions): such a
    file is skipped but never moved, since its bytes may well be a good record."""

    def __init__(self, message: str, unreadable: bool = False):
        super().__init__(message)
        self.unreadable = unreadable


def read_record(path: Union[str, Path], expected_id: Optional[str] = None) -> Record:
    """Parse one record file and check it against the schema (:mod:`bench.results.validate`);
    any failure is :class:`CorruptRecordError` naming the file. ``expected_id``: the point id
    the file must hold (a store's ``records/<id>.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CorruptRecordError(f"{path}: unreadable ({exc.strerror or exc})", unreadable=True) from None
    except ValueError as exc:  # bad JSON (or bytes that are not UTF-8)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CorruptRecordError(f"{path}: not a valid record ({type(exc).__name__}: {first})") from None
    try:
        return check_record(data, expected_id)
    except RecordInvalid as exc:
        raise CorruptRecordError(f"{path}: not a valid record ({exc})") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON that is no record in a way not foreseen
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CorruptRecordError(f"{path}: not a valid record ({type(exc).__name__}: {first})") from None


@dataclass
class Claim:
    """Who is measuring a point: written into ``records/<id>.claim`` when the point is claimed."""

    pid: int
    host: str
    started: float  # process start time (psutil), to tell a live owner from a reused pid
    time: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.time}"


def _process_start(pid: int) -> Optional[float]:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no such process, or psutil missing
        return None


def claim_is_stale(claim: Optional[Claim], age_s: float) -> bool:
    """A claim is stale when its owner is known to be gone: same host and the pid is dead (or
    now belongs to a process started later), or another host's claim older than CLAIM_STALE_S.
    An unreadable claim (crash while writing it) is stale once it is a minute old."""
    if claim is None:
        return age_s > 60
    if claim.host == socket.gethostname():
        started = _process_start(claim.pid)
        return started is None or abs(started - claim.started) > 1.0
    return age_s > CLAIM_STALE_S


class ResultsStore:
    """The records of one sweep, in ``root`` (``results/<sweep>``)."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.records_dir = self.root / RECORDS_DIR
        #: ``(path, message)`` of each corrupt record met (by the last records() call)
        self.corrupt: List[Tuple[Path, str]] = []

    def record_path(self, point_id: str) -> Path:
        return self.records_dir / f"{point_id}.json"

    def get(self, point_id: str, quarantine: bool = True) -> Optional[Record]:
        """The point's record, or None. A corrupt record is moved aside (``quarantine``) and
        reported, and counts as absent, so a resumed sweep re-measures that point."""
        path = self.record_path(point_id)
        if not path.exists():
            return None
        try:
            return read_record(path, expected_id=point_id)
        except CorruptRecordError as exc:
            self._corrupt(path, exc, quarantine)
            return None

    def is_done(self, point_id: str) -> bool:
        """A point counts as measured when it is ok or skipped (errors are retried on resume)."""
        rec = self.get(point_id)
        return rec is not None and rec.status in (STATUS_OK, STATUS_SKIPPED)

    def put(self, record: Record) -> Path:
        path = self.record_path(record.point_id)
        atomic_write_text(path, record.to_json())
        return path

    def _corrupt(self, path: Path, exc: CorruptRecordError, quarantine: bool) -> None:
        """Report a corrupt record; with ``quarantine`` move it to ``records/corrupt/``.

        Moving it (never deleting it) keeps the bytes for inspection while the next run sees
        the point as missing and measures it again. Read-only commands (report, compare,
        gate) only skip it: they must not change a results folder.
        """
        msg = str(exc)
        if quarantine and not exc.unreadable:
            dest_dir = self.records_dir / CORRUPT_DIR
            dest = dest_dir / path.name
            try:
                dest_dir.mkdir(exist_ok=True)
                if dest.exists():
                    dest = dest_dir / f"{path.stem}.{_dt.datetime.now():%Y%m%d-%H%M%S}.{os.getpid()}{path.suffix}"
                os.replace(path, dest)
                msg += f"; moved to {dest}"
            except OSError as move_exc:
                msg += f"; could not move it aside ({move_exc.strerror or move_exc})"
        else:
            msg += "; skipped"
        self.corrupt.append((path, msg))
        log.warning("corrupt record %s", msg)

    def records(self, quarantine: bool = False) -> List[Record]:
        """Every readable record; corrupt ones are reported (and moved aside with
        ``quarantine``), never allowed to stop the others from being read."""
        self.corrupt = []
        if not self.records_dir.is_dir():
            return []
        out = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                out.append(read_record(path, expected_id=path.stem))
            except CorruptRecordError as exc:
                self._corrupt(path, exc, quarantine)
        return out

    def consolidate(self, quarantine: bool = True) -> pd.DataFrame:
        """Rebuild results.csv and results.parquet from every good record file (corrupt ones
        are moved aside and listed in :attr:`corrupt`)."""
        df = records_to_frame(self.records(quarantine=quarantine))
        atomic_write_text(self.root / TABLE_CSV, df.to_csv(index=False))
        atomic_write_bytes(self.root / TABLE_PARQUET, frame_to_parquet_bytes(df))
        return df

    # ---- claims: one process measures a point at a time ---------------------------------
    def claim_path(self, point_id: str) -> Path:
        return self.records_dir / f"{point_id}{CLAIM_SUFFIX}"

    def read_claim(self, point_id: str) -> Optional[Claim]:
        try:
            return Claim(**json.loads(self.claim_path(point_id).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def claim(self, point_id: str) -> Tuple[bool, Optional[Claim]]:
        """Claim ``point_id`` for this process; returns ``(True, None)`` or ``(False, owner)``.

        The claim file is created with O_CREAT|O_EXCL, which is atomic on local filesystems
        and NFSv3+, so of two sweeps sharing a folder (or Slurm jobs of two arrays) exactly one
        measures the point; the other skips it instead of timing it on a machine the first
        one is loading. A stale claim (see :func:`claim_is_stale`) is taken over: it is
        renamed away first, so of two processes that both find it stale only one wins.
        """
        path = self.claim_path(point_id)
        me = Claim(pid=os.getpid(), host=socket.gethostname(), started=_process_start(os.getpid()) or 0.0,
                   time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        for _ in range(3):
            try:
                self.records_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = self.read_claim(point_id)
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if not claim_is_stale(owner, age):
                    return False, owner
                aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
                try:
                    os.rename(path, aside)
                except FileNotFoundError:
                    continue  # another process took it over first
                log.warning("took over a stale claim on %s (%s)", point_id,
                            owner.describe() if owner else "unreadable claim file")
                try:
                    os.unlink(aside)
                except OSError:
                    pass
                continue
            except OSError as exc:
                raise write_error(path, exc) from None
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(me.__dict__, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self.release(point_id)
                raise write_error(path, exc) from None
            return True, None
        return False, self.read_claim(point_id)

    def release(self, point_id: str) -> None:
        """Drop this process's claim (only its own: a taken-over claim is left alone)."""
        path = self.claim_path(point_id)
        owner = self.read_claim(point_id)
        if owner is not None and (owner.pid != os.getpid() or owner.host != socket.gethostname()):
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    rows = [r.to_row() for r in records]
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["encoder", "resolution", "llm", "dtype", "batch_size"], kind="stable")
    return df.reset_index(drop=True)


def frame_to_parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def load_table(path: Union[str, Path]) -> pd.DataFrame:
    """Read a results table from a sweep folder, a CSV, a Parquet file, or a records folder.

    A sweep folder is read from its record files when it has them (always complete), else
    from its consolidated table. Raises ``FileNotFoundError``/``ValueError`` with a clear
    message for anything else.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
    if path.is_dir():
        if (path / RECORDS_DIR).is_dir() and any((path / RECORDS_DIR).glob("*.json")):
            return records_to_frame(ResultsStore(path).records(quarantine=False))
        if path.name == RECORDS_DIR and any(path.glob("*.json")):
            return records_to_frame(ResultsStore(path.parent).records(quarantine=False))
        for name in (TABLE_PARQUET, TABLE_CSV):
            if (path / name).exists():
                return load_table(path / name)
        raise FileNotFoundError(f"{path} holds no records/ folder, {TABLE_CSV} or {TABLE_PARQUET}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".json":
        return records_to_frame([read_record(path)])  # CorruptRecordError is a ValueError naming the file
    raise ValueError(f"{path}: expected a results folder, .csv, .parquet or record .json")
