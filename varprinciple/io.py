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
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from ._noise_blocks import NoiseBlock, eigen_lookup, fingerprint, noise_blocks
from .errors import DuplicateRunWarning, InputError, LogValidationError, Problem
from .io_write import (atomic_write, atomic_write_bytes, file_record, refresh_file_records, to_arrow, write_json,
                       write_table)

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
    "atomic_write",
    "atomic_write_bytes",
    "read_table",
    "listed_file_problems",
    "file_record",
    "refresh_file_records",
]

logger = logging.getLogger(__name__)


# ============================================================================ writing


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
    run = _build_run(run_dir, meta, to_arrow(eigen), to_arrow(noise))
    extra = {name: to_arrow(t) for name, t in (tables or {}).items()}
    problems = list(run.problems)
    for name, t in extra.items():
        spec = schema.OPTIONAL_TABLES.get(name)
        if spec is not None:
            _, probs = schema.normalize_table(t, spec)
            problems += [Problem(str(run_dir), msg, meta.get("run_id"), name, key) for key, msg in probs]
    if problems:
        raise LogValidationError(problems)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_table(run_dir / schema.EIGEN_FILE, to_arrow(eigen))
    write_table(run_dir / schema.NOISE_FILE, to_arrow(noise))
    for name, t in extra.items():
        write_table(run_dir / name, t)
    write_json(run_dir / schema.RUN_JSON, meta)
    return run_dir


# ============================================================================ reading


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
    noi_n, pn = schema.normalize_table(noi, schema.NOISE, check_key=False)  # key: noise_blocks
    problems += [Problem(path, m, rid, schema.EIGEN_FILE, k) for k, m in pe]
    problems += [Problem(path, m, rid, schema.NOISE_FILE, k) for k, m in pn]
    run = RunLog(run_dir, meta, eig_n if eig_n is not None else eig, noi_n if noi_n is not None else noi)
    if eig_n is None or noi_n is None:
        run.problems = problems
        return run
    eig_lookup, pe2 = eigen_lookup(eig_n, path, rid)
    problems += pe2
    blocks, pn2 = noise_blocks(noi_n, eig_lookup, path, rid)
    problems += pn2
    run.problems = problems
    if not problems:
        run.blocks = blocks
        run.fingerprint = fingerprint(blocks)
    return run


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
