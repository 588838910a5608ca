"""Results store: one JSON file per sweep point plus a consolidated table, written atomically.

It knows nothing about timing or models; it only keeps :class:`bench.records.Record` objects
safe. Layout under ``results/<sweep>/``::

    records/<point_id>.json   one record each (raw samples included)
    results.csv               consolidated table, one row per record
    results.parquet           the same table for pandas/pyarrow

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed
over the target, so a crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Union

import pandas as pd

from .records import STATUS_OK, STATUS_SKIPPED, Record

TABLE_CSV = "results.csv"
TABLE_PARQUET = "results.parquet"
RECORDS_DIR = "records"


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class ResultsStore:
    """The records of one sweep, in ``root`` (``results/<sweep>``)."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.records_dir = self.root / RECORDS_DIR

    def record_path(self, point_id: str) -> Path:
        return self.records_dir / f"{point_id}.json"

    def get(self, point_id: str) -> Optional[Record]:
        path = self.record_path(point_id)
        if not path.exists():
            return None
        return Record.from_dict(json.loads(path.read_text()))

    def is_done(self, point_id: str) -> bool:
        """A point counts as measured when it is ok or skipped (errors are retried on resume)."""
        rec = self.get(point_id)
        return rec is not None and rec.status in (STATUS_OK, STATUS_SKIPPED)

    def put(self, record: Record) -> Path:
        path = self.record_path(record.point_id)
        atomic_write_text(path, record.to_json())
        return path

    def records(self) -> List[Record]:
        if not self.records_dir.is_dir():
            return []
        out = []
        for path in sorted(self.records_dir.glob("*.json")):
            out.append(Record.from_dict(json.loads(path.read_text())))
        return out

    def consolidate(self) -> pd.DataFrame:
        """Rebuild results.csv and results.parquet from every record file."""
        df = records_to_frame(self.records())
        atomic_write_text(self.root / TABLE_CSV, df.to_csv(index=False))
        atomic_write_bytes(self.root / TABLE_PARQUET, frame_to_parquet_bytes(df))
        return df


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
            return records_to_frame(ResultsStore(path).records())
        if path.name == RECORDS_DIR and any(path.glob("*.json")):
            return records_to_frame(ResultsStore(path.parent).records())
        for name in (TABLE_PARQUET, TABLE_CSV):
            if (path / name).exists():
                return load_table(path / name)
        raise FileNotFoundError(f"{path} holds no records/ folder, {TABLE_CSV} or {TABLE_PARQUET}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".json":
        return records_to_frame([Record.from_dict(json.loads(path.read_text()))])
    raise ValueError(f"{path}: expected a results folder, .csv, .parquet or record .json")
