"""A run's noise table as blocks: one samples x directions matrix per (step, source, block),
with the eigenvalues beside the Hessian directions, and the run's noise fingerprint.

Used by :func:`varprinciple.io.read_run` (which re-exports :class:`NoiseBlock`); the checks
report problems as :class:`~varprinciple.errors.Problem` lines naming the file and column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import schema
from .errors import Problem

__all__ = ["NoiseBlock", "eigen_lookup", "noise_blocks", "fingerprint"]


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


def _block_codes(table: pa.Table) -> tuple[np.ndarray, list[str | None]]:
    if "block" not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int64), [None]
    enc = table.column("block").combine_chunks().dictionary_encode()
    names = enc.dictionary.to_pylist()
    # a null block (whole-network rows beside per-block rows) is the code after the named ones
    codes = enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, names + [None]


def eigen_lookup(eig: pa.Table, path: str, rid: str | None):
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


def noise_blocks(noi: pa.Table, eig_lookup, path: str, rid: str | None):
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


def fingerprint(blocks: list[NoiseBlock]) -> str:
    """Identifies a run's noise content: equal for identical noise tables."""
    h = hashlib.blake2b(digest_size=16)
    for b in blocks:
        h.update(f"{b.step}|{b.source}|{b.block}|{b.values.shape}".encode())
        h.update(np.ascontiguousarray(b.variance).tobytes())
        h.update(np.ascontiguousarray(b.values[0]).tobytes())
        h.update(np.ascontiguousarray(b.values[-1]).tobytes())
    return h.hexdigest()
