"""Write files of a log set: atomic files, JSON (NaN as null), Parquet tables, file records.

Each file is written to a temporary name in the same directory and renamed. Re-exported by
:mod:`varprinciple.io` (import from there), whose ``write_run`` validates a run with the
reader's checks and writes ``run.json`` last, so a directory whose ``run.json`` exists holds
complete tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .errors import InputError

__all__ = ["write_table", "to_arrow", "write_json", "atomic_write", "atomic_write_bytes", "file_record",
           "refresh_file_records"]


def _umask_mode() -> int:
    """The mode a plainly created file gets (mkstemp would leave 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file in the same directory
    (which must exist: a deleted staging directory is never recreated here), which then gets a
    plain file's mode and is renamed over ``path``; on any failure the temporary file is removed.
    The one atomic writer of the package (bytes, Parquet, checkpoints, the recorder's parts)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (fsync before the rename)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return _finite_or_none(float(obj))
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _nan_to_none(obj: Any) -> Any:
    """Replace NaN/Inf floats by None recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, np.floating):
        return _finite_or_none(float(obj))
    if isinstance(obj, Mapping):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically; NaN/Inf become ``null``."""
    text = json.dumps(_nan_to_none(obj), indent=indent, default=_json_default, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def to_arrow(table: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise InputError(f"expected a pandas DataFrame or pyarrow Table; got {type(table).__name__}.")


def write_table(path: str | os.PathLike, table: pa.Table | pd.DataFrame) -> None:
    """Write a DataFrame or Arrow table to Parquet atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: pq.write_table(to_arrow(table), tmp))


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of a file: its entry in run.json's ``files``
    (:data:`varprinciple.schema.RUN_FILES`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        size = f.tell()
    return {"bytes": size, "sha256": h.hexdigest()}


def refresh_file_records(run_dir: str | os.PathLike, files: Iterable[str]) -> None:
    """After a tool rewrote ``files`` (paths relative to ``run_dir``) of a published run:
    record their new size and hash in its run.json's ``files``, if it keeps that key (a run
    without it, e.g. written by another tool, is left as it is)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / schema.RUN_JSON).read_text())
    if isinstance(meta, dict) and isinstance(meta.get(schema.RUN_FILES), dict):
        for rel in files:
            meta[schema.RUN_FILES][rel] = file_record(run_dir / rel)
        write_json(run_dir / schema.RUN_JSON, meta)
