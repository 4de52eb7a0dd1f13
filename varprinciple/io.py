"""Read and write runs of a log set (Parquet tables + ``run.json``); no statistics here.

Reading validates log schema v1 (:mod:`varprinciple.schema`) and the relations between
the tables of a run, and reports *every* problem as one line naming the run, the file and
the column or key. Writing is atomic: each file is written to a temporary name in the
same directory and renamed, and ``run.json`` is written last, so a directory whose
``run.json`` exists holds complete tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .errors import DuplicateRunWarning, InputError, LogValidationError, Problem

__all__ = [
    "NoiseBlock",
    "RunLog",
    "SkippedRun",
    "LogSet",
    "read_run",
    "read_logset",
    "find_runs",
    "write_run",
    "write_table",
    "write_json",
    "atomic_write_bytes",
    "read_table",
    "listed_file_problems",
    "file_record",
    "refresh_file_records",
]

logger = logging.getLogger(__name__)


# ============================================================================ writing


def _umask_mode() -> int:
    """The mode a plainly created file gets (mkstemp would leave 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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


def _to_arrow(table: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise InputError(f"expected a pandas DataFrame or pyarrow Table; got {type(table).__name__}.")


def write_table(path: str | os.PathLike, table: pa.Table | pd.DataFrame) -> None:
    """Write a DataFrame or Arrow table to Parquet atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(_to_arrow(table), tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_run(
    run_dir: str | os.PathLike,
    meta: Mapping[str, Any],
    *,
    eigen: pa.Table | pd.DataFrame,
    noise: pa.Table | pd.DataFrame,
    tables: Mapping[str, pa.Table | pd.DataFrame] | None = None,
) -> Path:
    """Validate and write one run of a log set.

    Parameters
    ----------
    run_dir : path
        Directory of the run (created if needed).
    meta : mapping
        The content of ``run.json``; ``schema_version`` defaults to 1.
    eigen, noise : DataFrame or pyarrow.Table
        The required tables (columns as in ``docs/log-schema.md``).
    tables : mapping, optional
        Optional tables by file name (e.g. ``{"training.parquet": df}``).

    Returns
    -------
    Path
        ``run_dir``.

    Raises
    ------
    LogValidationError
        If the run would break log schema v1; nothing is written then.

    Examples
    --------
    >>> import tempfile, numpy as np, pandas as pd
    >>> from varprinciple.io import write_run, read_run
    >>> rng = np.random.default_rng(0)
    >>> lam = np.array([4.0, 2.0, 1.0])
    >>> eigen = pd.DataFrame({"step": 0, "rank": [0, 1, 2], "eigenvalue": lam})
    >>> x = rng.normal(size=(50, 3)) * np.sqrt(lam)
    >>> noise = pd.DataFrame({"step": 0, "source": "sgd", "basis": "hessian",
    ...                       "direction": np.tile([0, 1, 2], 50),
    ...                       "sample": np.repeat(np.arange(50), 3), "value": x.ravel()})
    >>> d = tempfile.mkdtemp()
    >>> _ = write_run(d, {"run_id": "r0", "method": "sgd"}, eigen=eigen, noise=noise)
    >>> read_run(d).run_id
    'r0'
    """
    run_dir = Path(run_dir)
    meta = dict(meta)
    meta.setdefault("schema_version", schema.SCHEMA_VERSION)
    # Validate everything in memory first, with the reader's own checks.
    run = _build_run(run_dir, meta, _to_arrow(eigen), _to_arrow(noise))
    extra = {name: _to_arrow(t) for name, t in (tables or {}).items()}
    problems = list(run.problems)
    for name, t in extra.items():
        spec = schema.OPTIONAL_TABLES.get(name)
        if spec is not None:
            _, probs = schema.normalize_table(t, spec)
            problems += [Problem(str(run_dir), msg, meta.get("run_id"), name, key) for key, msg in probs]
    if problems:
        raise LogValidationError(problems)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_table(run_dir / schema.EIGEN_FILE, _to_arrow(eigen))
    write_table(run_dir / schema.NOISE_FILE, _to_arrow(noise))
    for name, t in extra.items():
        write_table(run_dir / name, t)
    write_json(run_dir / schema.RUN_JSON, meta)
    return run_dir


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


# ============================================================================ reading


@dataclass(frozen=True)
class NoiseBlock:
    """The noise draws of one (step, source, block) of a run, as a samples x directions matrix.

    Columns are ordered Hessian directions first (by rank), then random directions.
    ``eigenvalue`` and ``residual`` are NaN for random directions (and ``residual``
    where the log has none). ``variance`` is the column variance with ddof = 1, centred
    on the sample mean (DESIGN.md: dropout noise has non-zero mean).
    """

    step: int
    source: str
    block: str | None
    values: np.ndarray  # (K, d) float64
    basis: np.ndarray  # (d,) object array of "hessian"/"random"
    direction: np.ndarray  # (d,) int64
    eigenvalue: np.ndarray  # (d,) float64
    residual: np.ndarray  # (d,) float64
    samples: np.ndarray  # (K,) int64
    variance: np.ndarray  # (d,) float64

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def is_hessian(self) -> np.ndarray:
        return self.basis == schema.Basis.HESSIAN.value


@dataclass
class RunLog:
    """One validated run: its ``run.json`` content and its tables.

    The noise draws live in ``blocks`` (matrices). A run read from disk does not keep the
    long tables in memory (``eigen_table``/``noise_table`` are None); ``eigen`` and
    ``noise`` read them again from ``path`` when asked.
    """

    path: Path
    meta: dict
    eigen_table: pa.Table | None
    noise_table: pa.Table | None
    blocks: list[NoiseBlock] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id"))

    @property
    def method(self) -> str:
        return str(self.meta.get("method"))

    @property
    def eigen(self) -> pd.DataFrame:
        if self.eigen_table is None:
            return read_table(self.path / schema.EIGEN_FILE, run_id=self.run_id)
        return self.eigen_table.to_pandas()

    @property
    def noise(self) -> pd.DataFrame:
        if self.noise_table is None:
            return read_table(self.path / schema.NOISE_FILE, run_id=self.run_id)
        return self.noise_table.to_pandas()

    @property
    def steps(self) -> list[int]:
        return sorted({b.step for b in self.blocks})

    def optional_table(self, name: str) -> pd.DataFrame | None:
        """Read an optional table of this run (validated if its spec is known), or None."""
        p = self.path / name
        if not p.exists():
            return None
        return read_table(p, run_id=self.run_id)


@dataclass(frozen=True)
class SkippedRun:
    """A run left out of an analysis, with every problem found in it."""

    path: str
    run_id: str | None
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"path": self.path, "run_id": self.run_id, "problems": list(self.problems)}


@dataclass
class LogSet:
    """The valid runs of a log set, the skipped ones, and runs with identical noise."""

    root: Path
    runs: list[RunLog]
    skipped: list[SkippedRun] = field(default_factory=list)
    identical: list[tuple[str, ...]] = field(default_factory=list)


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Every directory at or below ``root`` that holds ``run.json``, sorted."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such directory.")
    if root.is_file():
        raise InputError(f"{root}: is a file; expected a log-set directory.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if schema.RUN_JSON in filenames:
            found.append(Path(dirpath))
    return sorted(found)


def read_table(path: str | os.PathLike, *, run_id: str | None = None) -> pd.DataFrame:
    """Read one Parquet table; validate it if it is a table of log schema v1."""
    path = Path(path)
    spec = {schema.EIGEN_FILE: schema.EIGEN, schema.NOISE_FILE: schema.NOISE}.get(path.name)
    spec = spec or schema.OPTIONAL_TABLES.get(path.name)
    try:
        t = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise LogValidationError([Problem(str(path.parent), f"unreadable Parquet ({_one_line(exc)})",
                                          run_id, path.name)]) from None
    if spec is not None:
        t2, probs = schema.normalize_table(t, spec)
        if probs:
            raise LogValidationError(
                [Problem(str(path.parent), msg, run_id, path.name, key) for key, msg in probs])
        t = t2
    return t.to_pandas()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _read_meta(run_dir: Path) -> tuple[dict | None, list[Problem]]:
    p = run_dir / schema.RUN_JSON
    try:
        meta = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(run_dir), f"unreadable ({_one_line(exc)})", None, schema.RUN_JSON)]
    except json.JSONDecodeError as exc:
        return None, [Problem(str(run_dir), f"invalid JSON ({exc.msg} at line {exc.lineno})", None,
                              schema.RUN_JSON)]
    if not isinstance(meta, dict):
        return None, [Problem(str(run_dir), "must hold a JSON object", None, schema.RUN_JSON)]
    return meta, []


def _meta_problems(run_dir: Path, meta: dict) -> list[Problem]:
    rid = meta.get("run_id") if isinstance(meta.get("run_id"), str) else None
    probs = []
    for key, types in schema.RUN_REQUIRED_KEYS.items():
        if key not in meta:
            probs.append(Problem(str(run_dir), "missing", rid, schema.RUN_JSON, f"key {key!r}"))
            continue
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, types):
            probs.append(Problem(str(run_dir), f"must be {types[0].__name__}; got {v!r}", rid,
                                 schema.RUN_JSON, f"key {key!r}"))
        elif isinstance(v, str) and not v.strip():
            probs.append(Problem(str(run_dir), "must not be empty", rid, schema.RUN_JSON, f"key {key!r}"))
    v = meta.get("schema_version")
    if isinstance(v, int) and not isinstance(v, bool) and v != schema.SCHEMA_VERSION:
        probs.append(Problem(str(run_dir), f"unsupported schema_version {v} (this reader supports "
                             f"{schema.SCHEMA_VERSION})", rid, schema.RUN_JSON, "key 'schema_version'"))
    return probs


def _relative_inside(rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts


def listed_file_problems(run_dir: str | os.PathLike, meta: Mapping[str, Any]) -> list[Problem]:
    """Problems with the files ``run.json`` lists: under ``files``
    (:data:`varprinciple.schema.RUN_FILES`; each must exist with its recorded size and, where
    the entry has one, its recorded ``sha256``: a file replaced by one of the same size is
    caught) and
    under ``model_file``/``checkpoints`` (each must exist). A run published incomplete (e.g.
    by an interrupted sweep of an older varprinciple) is refused, naming the missing file.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> [str(p) for p in listed_file_problems(d, {"run_id": "r0", "checkpoints": ["checkpoints/step_5.pt"]})]
    ["run 'r0': checkpoints/step_5.pt: missing file (listed in run.json)"]
    """
    run_dir = Path(run_dir)
    rid = meta.get("run_id") if isinstance(meta.get("run_id"), str) else None
    path = str(run_dir)
    probs: list[Problem] = []
    sizes: dict[str, Any] = {}
    digests: dict[str, str] = {}
    files = meta.get(schema.RUN_FILES)
    if files is not None:
        if not isinstance(files, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("bytes"), int) for v in files.values()):
            return [Problem(path, 'must map file paths to {"bytes": int, "sha256": str}', rid, schema.RUN_JSON,
                            f"key {schema.RUN_FILES!r}")]
        sizes = {k: v["bytes"] for k, v in files.items()}
        digests = {k: v["sha256"] for k, v in files.items() if isinstance(v.get("sha256"), str)}
    for key in schema.RUN_FILE_LIST_KEYS:
        v = meta.get(key)
        for rel in ([v] if isinstance(v, str) else v if isinstance(v, list) else []):
            sizes.setdefault(rel, None)
    for rel, size in sizes.items():
        if not _relative_inside(rel):
            probs.append(Problem(path, f"lists {rel!r}, not a path inside the run directory", rid, schema.RUN_JSON))
            continue
        try:
            st = (run_dir / rel).stat()
        except OSError:
            probs.append(Problem(path, "missing file (listed in run.json)", rid, rel))
            continue
        if size is not None and st.st_size != size:
            probs.append(Problem(path, f"{st.st_size} bytes, run.json lists {size} (truncated or replaced)",
                                 rid, rel))
        elif rel in digests and _sha256(run_dir / rel) != digests[rel].lower():
            probs.append(Problem(path, "content differs from the sha256 run.json lists (replaced or corrupted)",
                                 rid, rel))
    return probs


def _sha256(path: Path) -> str | None:
    """Hex sha256 of a file (None when it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _read_parquet(run_dir: Path, spec: schema.TableSpec, rid: str | None) -> tuple[pa.Table | None, list[Problem]]:
    p = run_dir / spec.file
    if not p.exists():
        return None, [Problem(str(run_dir), "missing file", rid, spec.file)]
    try:
        t = pq.read_table(p)
    except Exception as exc:
        return None, [Problem(str(run_dir), f"unreadable Parquet ({_one_line(exc)})", rid, spec.file)]
    return t, []


def read_run(run_dir: str | os.PathLike) -> RunLog:
    """Read and validate one run; raise :class:`LogValidationError` listing every problem."""
    run_dir = Path(run_dir)
    run = _load_run(run_dir)
    if run.problems:
        raise LogValidationError(run.problems)
    return run


def _load_run(run_dir: Path) -> RunLog:
    meta, probs = _read_meta(run_dir)
    if meta is None:
        return RunLog(run_dir, {}, pa.table({}), pa.table({}), problems=probs)
    rid = meta.get("run_id") if isinstance(meta.get("run_id"), str) else None
    listed = listed_file_problems(run_dir, meta)
    if listed:  # an incomplete run: its missing files first, before any table is read
        run = RunLog(run_dir, meta, pa.table({}), pa.table({}))
        run.problems = listed + _meta_problems(run_dir, meta)
        return run
    eig, p1 = _read_parquet(run_dir, schema.EIGEN, rid)
    noi, p2 = _read_parquet(run_dir, schema.NOISE, rid)
    if eig is None or noi is None:
        run = RunLog(run_dir, meta, pa.table({}), pa.table({}))
        run.problems = _meta_problems(run_dir, meta) + p1 + p2
        return run
    run = _build_run(run_dir, meta, eig, noi)
    for name, spec in schema.OPTIONAL_TABLES.items():
        if (run_dir / name).exists():
            t, probs = _read_parquet(run_dir, spec, rid)
            if t is not None:
                probs = [Problem(str(run_dir), m, rid, name, k) for k, m in schema.normalize_table(t, spec)[1]]
            run.problems += probs
    # the blocks hold the draws; drop the long tables (they are re-read on demand), which
    # keeps a large log set's memory at about one copy of its values
    run.eigen_table = run.noise_table = None
    return run


def _build_run(run_dir: Path, meta: dict, eig: pa.Table, noi: pa.Table) -> RunLog:
    """Validate tables of one run and reshape the noise into :class:`NoiseBlock` matrices."""
    rid = meta.get("run_id") if isinstance(meta.get("run_id"), str) else None
    path = str(run_dir)
    problems = _meta_problems(run_dir, meta)
    eig_n, pe = schema.normalize_table(eig, schema.EIGEN)
    noi_n, pn = schema.normalize_table(noi, schema.NOISE, check_key=False)  # key: _noise_blocks
    problems += [Problem(path, m, rid, schema.EIGEN_FILE, k) for k, m in pe]
    problems += [Problem(path, m, rid, schema.NOISE_FILE, k) for k, m in pn]
    run = RunLog(run_dir, meta, eig_n if eig_n is not None else eig, noi_n if noi_n is not None else noi)
    if eig_n is None or noi_n is None:
        run.problems = problems
        return run
    eig_lookup, pe2 = _eigen_lookup(eig_n, path, rid)
    problems += pe2
    blocks, pn2 = _noise_blocks(noi_n, eig_lookup, path, rid)
    problems += pn2
    run.problems = problems
    if not problems:
        run.blocks = blocks
        run.fingerprint = _fingerprint(blocks)
    return run


def _block_codes(table: pa.Table) -> tuple[np.ndarray, list[str | None]]:
    if "block" not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64), [None]
    enc = table.column("block").combine_chunks().dictionary_encode()
    names = enc.dictionary.to_pylist()
    # a null block (whole-network rows beside per-block rows) is the code after the named ones
    codes = enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, names + [None]


def _eigen_lookup(eig: pa.Table, path: str, rid: str | None):
    step = eig.column("step").to_numpy()
    rank = eig.column("rank").to_numpy()
    val = eig.column("eigenvalue").to_numpy()
    res = (eig.column("residual").to_numpy() if "residual" in eig.column_names
           else np.full(len(val), np.nan))
    bcode, bnames = _block_codes(eig)
    lookup: dict[tuple[int, str | None, int], tuple[float, float]] = {}
    # (step, block, rank) is unique: schema.EIGEN.unique_key, checked by normalize_table
    for s, b, r, v, e in zip(step.tolist(), bcode.tolist(), rank.tolist(), val.tolist(), res.tolist()):
        lookup[(s, bnames[b], r)] = (v, e)
    return lookup, []


def _noise_blocks(noi: pa.Table, eig_lookup, path: str, rid: str | None):
    F = schema.NOISE_FILE
    step = noi.column("step").to_numpy()
    src_enc = noi.column("source").combine_chunks().dictionary_encode()
    src = src_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    src_names = src_enc.dictionary.to_pylist()
    bas_enc = noi.column("basis").combine_chunks().dictionary_encode()
    bas_names = bas_enc.dictionary.to_pylist()
    # code hessian as 0, random as 1, so that Hessian directions come first
    bas_map = np.array([0 if b == schema.Basis.HESSIAN.value else 1 for b in bas_names], dtype=np.int64)
    bas = bas_map[bas_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    direction = noi.column("direction").to_numpy()
    sample = noi.column("sample").to_numpy()
    value = noi.column("value").to_numpy()
    blk, blk_names = _block_codes(noi)

    order = _canonical_order(step, src, blk, sample, bas, direction)
    if order is not None:
        step, src, blk, sample, bas, direction, value = (
            a[order] for a in (step, src, blk, sample, bas, direction, value))
    n = len(step)
    gchange = np.empty(n, dtype=bool)
    gchange[0] = True
    gchange[1:] = (step[1:] != step[:-1]) | (src[1:] != src[:-1]) | (blk[1:] != blk[:-1])
    starts = np.flatnonzero(gchange)
    ends = np.append(starts[1:], n)
    problems: list[Problem] = []
    blocks: list[NoiseBlock] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        s_, so_, bl_ = int(step[a]), src_names[src[a]], blk_names[blk[a]]
        where = f"step {s_}, source {so_!r}" + (f", block {bl_!r}" if bl_ is not None else "")
        smp, val = sample[a:b], value[a:b]
        width = int(direction[a:b].max()) + 1
        colkey = bas[a:b] * width + direction[a:b]
        # rows are sorted by (sample, basis, direction): a new draw starts where sample changes
        new_draw = np.empty(b - a, dtype=bool)
        new_draw[0] = True
        new_draw[1:] = smp[1:] != smp[:-1]
        ndup = int(np.count_nonzero(~new_draw[1:] & (colkey[1:] == colkey[:-1])))
        if ndup:
            problems.append(Problem(path, f"{where}: {ndup} duplicate (sample, basis, direction) "
                                    f"row{'s' if ndup > 1 else ''}", rid, F, "column 'sample'"))
            continue
        draw_start = np.flatnonzero(new_draw)
        K = len(draw_start)
        counts = np.diff(np.append(draw_start, b - a))
        if K < 2:
            problems.append(Problem(path, f"{where}: {K} sample (need at least 2)", rid, F, "column 'sample'"))
            continue
        d0 = int(counts[0])
        covered = bool(np.all(counts == d0)) and np.array_equal(
            colkey.reshape(K, d0), np.broadcast_to(colkey[:d0], (K, d0)))
        ucols = colkey[:d0] if covered else np.unique(colkey)
        d = len(ucols)
        col_bas = ucols // width
        col_dir = ucols % width
        eigval = np.full(d, np.nan)
        resid = np.full(d, np.nan)
        missing = []
        for j in np.flatnonzero(col_bas == 0).tolist():
            hit = eig_lookup.get((s_, bl_, int(col_dir[j])))
            if hit is None:
                missing.append(int(col_dir[j]))
            else:
                eigval[j], resid[j] = hit
        if missing:
            problems.append(Problem(path, f"{where}: no eigenvalue for Hessian direction(s) "
                                    f"{missing[:10]}{' ...' if len(missing) > 10 else ''} "
                                    f"(expected rows with this step and rank)", rid,
                                    schema.EIGEN_FILE, "column 'rank'"))
        if not covered:
            short = int(np.count_nonzero(counts != d))
            problems.append(Problem(path, f"{where}: {max(short, 1)} of {K} draws do not cover all {d} directions",
                                    rid, F, "column 'sample'"))
            continue
        mat = val.reshape(K, d)  # every draw covers the same directions, in the same order
        usmp = smp[draw_start]
        var = mat.var(axis=0, ddof=1)
        zero = np.flatnonzero(~(var > 0))
        if len(zero):
            names = [f"{'hessian' if col_bas[j] == 0 else 'random'} {int(col_dir[j])}" for j in zero[:5]]
            problems.append(Problem(path, f"{where}: zero variance along direction(s) {', '.join(names)}"
                                    + (" ..." if len(zero) > 5 else ""), rid, F, "column 'value'"))
        if len(zero) or missing:
            continue
        basis_names = np.where(col_bas == 0, schema.Basis.HESSIAN.value, schema.Basis.RANDOM.value).astype(object)
        blocks.append(NoiseBlock(s_, so_, bl_, mat, basis_names, col_dir.astype(np.int64), eigval, resid,
                                 usmp.astype(np.int64), var))
    return blocks, problems


def _canonical_order(step, src, blk, sample, bas, direction) -> np.ndarray | None:
    """Permutation sorting rows by (step, source, block, sample, basis, direction), or None
    when they already are (the usual layout of writers), which saves the sort."""
    if step[0] == step.min() == step.max():  # one probe step: no need to factorise
        ustep, step_code = step[:1], np.zeros(len(step), dtype=np.int64)
    else:
        ustep, step_code = np.unique(step, return_inverse=True)
    radices = [len(ustep), int(src.max()) + 1, int(blk.max()) + 1, int(sample.max()) + 1, 2,
               int(direction.max()) + 1]
    if float(np.prod([float(r) for r in radices])) < 2.0 ** 62:
        key = step_code.astype(np.int64)
        for arr, r in zip((src, blk, sample, bas, direction), radices[1:]):
            key = key * r + arr
        if np.all(key[1:] >= key[:-1]):
            return None
        return np.argsort(key, kind="stable")
    return np.lexsort((direction, bas, sample, blk, src, step))


def _fingerprint(blocks: list[NoiseBlock]) -> str:
    """Identifies a run's noise content: equal for identical noise tables."""
    h = hashlib.blake2b(digest_size=16)
    for b in blocks:
        h.update(f"{b.step}|{b.source}|{b.block}|{b.values.shape}".encode())
        h.update(np.ascontiguousarray(b.variance).tobytes())
        h.update(np.ascontiguousarray(b.values[0]).tobytes())
        h.update(np.ascontiguousarray(b.values[-1]).tobytes())
    return h.hexdigest()


def read_logset(root: str | os.PathLike, *, skip_invalid: bool = False) -> LogSet:
    """Read every run below ``root``.

    Parameters
    ----------
    root : path
        The log-set directory.
    skip_invalid : bool, default False
        If False, any invalid run raises :class:`LogValidationError` listing every problem
        of every run. If True, invalid runs are left out and listed in ``LogSet.skipped``.

    Returns
    -------
    LogSet
        Valid runs sorted by path; runs with identical noise tables are listed in
        ``identical`` and a :class:`DuplicateRunWarning` is issued.
    """
    root = Path(root)
    paths = find_runs(root)
    if not paths:
        raise InputError(f"{root}: no run found (no {schema.RUN_JSON} at or below it).")
    runs = []
    for p in paths:
        runs.append(_load_run(p))
    # duplicate run_id across the set
    by_id: dict[str, list[RunLog]] = {}
    for r in runs:
        if isinstance(r.meta.get("run_id"), str):
            by_id.setdefault(r.meta["run_id"], []).append(r)
    for rid, rs in by_id.items():
        if len(rs) > 1:
            others = ", ".join(str(x.path) for x in rs)
            for r in rs:
                r.problems.append(Problem(str(r.path), f"duplicate run_id at {r.path} (the set has it at "
                                          f"{others})", rid, schema.RUN_JSON, "key 'run_id'"))
    bad = [r for r in runs if r.problems]
    if bad and not skip_invalid:
        raise LogValidationError([p for r in bad for p in r.problems])
    good = [r for r in runs if not r.problems]
    skipped = [SkippedRun(str(r.path), r.meta.get("run_id") if isinstance(r.meta.get("run_id"), str) else None,
                          tuple(str(p) for p in r.problems)) for r in bad]
    for s in skipped:
        logger.warning("skipping invalid run %s: %s", s.path, "; ".join(s.problems))
    fp: dict[str, list[str]] = {}
    for r in good:
        fp.setdefault(r.fingerprint, []).append(r.run_id)
    identical = [tuple(ids) for ids in fp.values() if len(ids) > 1]
    for ids in identical:
        warnings.warn(f"runs {', '.join(ids)} have identical noise tables (copies of one probe); "
                      f"varprinciple test counts them as one network", DuplicateRunWarning, stacklevel=2)
    return LogSet(root, good, skipped, identical)


def iter_blocks(runs: Iterable[RunLog]) -> Iterable[tuple[RunLog, NoiseBlock]]:
    """Every (run, noise block) pair of ``runs``."""
    for r in runs:
        for b in r.blocks:
            yield r, b
