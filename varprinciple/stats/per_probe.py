"""Per-probe statistics: one relation row and the per-direction columns of one noise block.

A *probe* is one run x step x source x block (:class:`varprinciple.io.NoiseBlock`). Its
relation row (one ``relations`` row of the results, fields in
:data:`varprinciple.results.RELATION_FIELDS`) is assembled from independent parts, one
small function each: the exponent fit, the rank correlation, the Hessian/random variance
ratio, alignment_k with its isotropy test, the curvature test. A new per-probe statistic is
one more ``_..._fields`` function added to :func:`probe_relation`'s list.

The exponent is fitted from the exact per-direction variances
(:func:`varprinciple.stats.relation_exact.exact_relation_fit`, ``variance_input`` "exact") where
the run's ``exact_variance.parquet`` carries their per-group contributions for every column of
the probe (:func:`exact_groups`; probes logged without draws come from :func:`exact_only_blocks`),
else from the sampled draws (``variance_input`` "draws").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import pandas as pd

from ..results import DIRECTION_COLUMNS, RANDOM_REASON
from ._resampling import Resampler
from .alignment import _alignment_from_cov, _ratio_interval, curvature_test, isotropy_jackknife_p
from .isotropy import isotropy_tail_refusal, tails_differ
from .relation import (MIN_DIRECTIONS_CI, MIN_DRAWS_RARE, RARE_DRAW_ALPHA, RARE_DRAW_SHARE, ExclusionReason,
                       _fit_core, _nan_fit, draw_share, exclusion_reasons, spearman)
from .relation_exact import exact_relation_fit

__all__ = ["ProbeOptions", "ProbeData", "probe_relation", "directions_frame", "rare_draw_sources",
           "refuse_rare_draw_probes", "RARE_SOURCE_NOTE", "kurtosis_gradient",
           "heavy_tail_sources", "refuse_heavy_tail_isotropy", "exact_groups", "exact_only_blocks",
           "VarianceInput"]


class VarianceInput(StrEnum):
    """What a probe's b was fitted from (the ``variance_input`` field of a relations row)."""

    DRAWS = "draws"
    EXACT = "exact"


@dataclass(frozen=True)
class ProbeOptions:
    """Settings every probe is analysed with (from :func:`varprinciple.stats.analyze`)."""

    confidence: float
    floor_rel: float
    residual_factor: float
    resamples: int


@dataclass(frozen=True)
class ProbeData:
    """One probe's arrays split into the Hessian basis and the exclusion decisions."""

    block: object            # the io.NoiseBlock
    hessian: np.ndarray      # bool mask over the block's directions: basis hessian
    lam: np.ndarray          # eigenvalues of the Hessian directions
    reasons: np.ndarray      # exclusion reason per Hessian direction (None: included)
    included: np.ndarray     # bool mask over the Hessian directions: enters the log fit
    groups: np.ndarray | None = None   # (J, d) exact-variance group contributions, or None
    variance: np.ndarray | None = None  # (d,) the variances b is fitted from (exact when groups)

    @property
    def n_included(self) -> int:
        return int(self.included.sum())

    @property
    def n_samples(self) -> int:
        return self.block.n_samples


def _prepare(blk, opts: ProbeOptions, groups: np.ndarray | None = None) -> ProbeData:
    H = blk.is_hessian
    lam = blk.eigenvalue[H]
    reasons = exclusion_reasons(lam, residuals=blk.residual[H], floor_rel=opts.floor_rel,
                                residual_factor=opts.residual_factor)
    inc = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
    var = blk.variance if groups is None else groups.sum(axis=0)
    return ProbeData(blk, H, lam, reasons, inc, groups, var)


def exact_groups(run) -> dict:
    """The run's exact-variance group contributions by probe: ``{(step, source, block): {(basis,
    direction): (J,) array}}`` from the ``group_variance`` column of ``exact_variance.parquet``
    (dropout's two-mask estimate); ``{}`` without it. A probe whose rows do not all carry groups
    of one length is left out (its b comes from the draws)."""
    from .. import schema
    df = run.optional_table(schema.EXACT_VARIANCE.file)
    if df is None or "group_variance" not in df:
        return {}
    blocks = df["block"] if "block" in df else pd.Series([None] * len(df), index=df.index)
    out: dict = {}
    bad = set()
    for step, src, blk, bas, dr, gv in zip(df["step"], df["source"], blocks, df["basis"], df["direction"],
                                           df["group_variance"]):
        key = (int(step), str(src), None if blk is None or (isinstance(blk, float) and np.isnan(blk)) else blk)
        if gv is None or (isinstance(gv, float) and np.isnan(gv)):
            bad.add(key)
            continue
        out.setdefault(key, {})[(str(bas), int(dr))] = np.asarray(gv, dtype=float)
    for key, cols in list(out.items()):
        if key in bad or len({v.shape for v in cols.values()}) != 1:
            del out[key]
    return out


def _block_groups(blk, cols: dict | None) -> np.ndarray | None:
    """The (J, d) group matrix aligned with ``blk``'s columns, or None if a column has none."""
    if not cols:
        return None
    try:
        return np.column_stack([cols[(str(b), int(d))] for b, d in zip(blk.basis, blk.direction)])
    except KeyError:
        return None


def exact_only_blocks(run, groups: dict) -> list:
    """Noise blocks (no draws, ``values`` of shape (0, d)) for the probes that have exact-variance
    groups but no sampled draws (``[probe] dropout_samples = 0``), eigenvalues from the run's
    eigen table; the variance is the exact one."""
    from ..io import NoiseBlock
    have = {(int(b.step), b.source, b.block) for b in run.blocks}
    todo = [k for k in groups if k not in have]
    if not todo:
        return []
    eig = run.eigen
    eb = eig["block"] if "block" in eig else pd.Series([None] * len(eig), index=eig.index)
    look = {(int(s), None if b is None or (isinstance(b, float) and np.isnan(b)) else b, int(r)): (v, e)
            for s, b, r, v, e in zip(eig["step"], eb, eig["rank"], eig["eigenvalue"],
                                     eig["residual"] if "residual" in eig else [np.nan] * len(eig))}
    out = []
    for step, src, blk in sorted(todo, key=lambda k: (k[0], k[1], str(k[2]))):
        cols = groups[(step, src, blk)]
        keys = sorted(cols, key=lambda c: (c[0] != "hessian", c[1]))
        basis = np.array([c[0] for c in keys], dtype=object)
        direction = np.array([c[1] for c in keys], dtype=np.int64)
        ev = [look.get((step, blk, d), (np.nan, np.nan)) if b == "hessian" else (np.nan, np.nan)
              for b, d in keys]
        G = np.column_stack([cols[c] for c in keys])
        out.append(NoiseBlock(step, src, blk, np.zeros((0, len(keys))), basis, direction,
                              np.array([e[0] for e in ev], dtype=float), np.array([e[1] for e in ev], dtype=float),
                              np.zeros(0, dtype=np.int64), G.sum(axis=0)))
    return out


def _fit_fields(d: ProbeData, opts: ProbeOptions, resampler) -> dict:
    """The exponent b (OLS on log-log) with its CI and one-sided p; exclusions by reason."""
    excluded = {r.value: int(np.count_nonzero(d.reasons == r.value)) for r in ExclusionReason}
    K, n, n_out = d.n_samples, d.n_included, int((~d.included).sum())
    note, src = None, VarianceInput.DRAWS.value
    if d.groups is not None:  # exact variances: the jackknife over groups of samples
        ef = exact_relation_fit(d.groups[:, d.hessian], d.lam, residuals=d.block.residual[d.hessian],
                                confidence=opts.confidence, floor_rel=opts.floor_rel,
                                residual_factor=opts.residual_factor)
        fit, note, src = replace(ef.fit, n_samples=K), ef.note, VarianceInput.EXACT.value
        if K >= 4 and n >= 1:  # the draws' tail diagnostic still serves the isotropy refusal
            share, share_p = draw_share(d.block.values[:, d.hessian][:, d.included])
            fit = replace(fit, max_draw_share=share, draw_share_p=share_p)
        if K < 3:
            note = _append(note, "no ratio, alignment_k, isotropy or curvature test: no sampled draws "
                                 "(b from the exact variances)")
    elif n >= 2:
        Xh = d.block.values[:, d.hessian]
        fit = _fit_core(Xh[:, d.included], np.log(d.lam[d.included]), K, n, n_out, opts.confidence, excluded)
    else:
        fit = _nan_fit(n, n_out, K, opts.confidence, excluded)
    return {
        "slope": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "p_value": fit.p_value,
        "intercept": fit.intercept, "se_slope": fit.se_slope, "se_intercept": fit.se_intercept,
        "cov_intercept_slope": fit.cov_intercept_slope, "df": fit.df, "scatter_var": fit.scatter_var,
        "sampling_se": fit.sampling_se, "n_directions": fit.n_directions,
        "n_hessian": int(d.hessian.sum()), "n_excluded": fit.n_excluded,
        **{f"n_excluded_{k}": v for k, v in excluded.items()},
        "n_samples": K, "n_random": int((~d.hessian).sum()),
        "max_draw_share": fit.max_draw_share, "draw_share_p": fit.draw_share_p, "note": note,
        "variance_input": src, "exact_groups": None if d.groups is None else int(d.groups.shape[0]),
    }


def _spearman_fields(d: ProbeData, opts: ProbeOptions, resampler) -> dict:
    """Spearman's r of variance on eigenvalue over all Hessian directions (rank statistics
    may use eigenvalues <= 0)."""
    r_s, p_s = spearman(d.lam, d.variance[d.hessian])
    return {"spearman_r": r_s, "spearman_p": p_s,
            "kurtosis_spearman_r": kurtosis_gradient(d.block.values[:, d.hessian], d.lam)}


def kurtosis_gradient(values, eigenvalues) -> float:
    """Spearman r between the eigenvalues and the draws' sample kurtosis per direction: a shape
    of the noise that changes along the spectrum (which biases rank statistics of s^2 with no
    relation of the variance to curvature; group_level.curvature_alignment_rows). NaN with
    fewer than 4 draws or 3 non-constant directions.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> spike = rng.random((400, 10)) < 0.05                  # rare draws, larger in flat directions
    >>> x = rng.normal(size=(400, 10)) * np.where(spike, 1 + np.arange(10), 1.0)
    >>> kurtosis_gradient(x, np.arange(10.0, 0.0, -1.0)) < -0.8
    True
    """
    X = np.asarray(values, dtype=float)
    lam = np.asarray(eigenvalues, dtype=float)
    if X.shape[0] < 4:
        return np.nan
    e = X - X.mean(axis=0)
    m2 = np.mean(e * e, axis=0)
    ok = m2 > 0
    if ok.sum() < 3:
        return np.nan
    kurt = np.mean(e[:, ok] ** 4, axis=0) / m2[ok] ** 2
    return spearman(lam[ok], kurt)[0]


def _ratio_fields(d: ProbeData, opts: ProbeOptions, resampler) -> dict:
    """Hessian/random variance ratio with its analytic CI (needs both bases; the interval
    needs at least 2 random directions and 3 draws)."""
    H = d.hessian
    nh, nr = int(H.sum()), int((~H).sum())
    ratio = (np.nan, np.nan, np.nan, np.nan)
    if nr > 0 and nh > 0 and d.n_samples >= 3:
        order = np.concatenate([np.flatnonzero(H), np.flatnonzero(~H)])
        vr = _ratio_interval(d.block.values[:, order], nh, opts.confidence)
        ratio = (vr.estimate, vr.ci_low, vr.ci_high, vr.df)
    return {"ratio": ratio[0], "ratio_ci_low": ratio[1], "ratio_ci_high": ratio[2], "ratio_df": ratio[3]}


def _alignment_fields(d: ProbeData, opts: ProbeOptions, resampler) -> dict:
    """alignment_k over the included Hessian directions with its test of an isotropic
    covariance: ``isotropy_p`` = max(rotation p, jackknife p) (the rotation test alone needs
    the whole law rotation-invariant; ``isotropy_p_rotation`` keeps it; ``alignment_p``, the
    old name, has ``isotropy_p``'s value for JSON v1 readers). Both are refused (null, reason
    in the row's note) where one draw dominates a direction and the tails cannot be shown alike
    across directions (:func:`varprinciple.stats.isotropy.isotropy_tail_refusal`; its count of
    tail draws and concentration p are the row's ``tail_draws`` / ``tail_concentration_p``)."""
    n, K = d.n_included, d.n_samples
    align = (np.nan, np.nan, np.nan)
    why, tail = None, (np.nan, np.nan)
    if n >= 2 and K >= 3:
        Xi = d.block.values[:, d.hessian][:, d.included]
        Xc = Xi - Xi.mean(axis=0)
        S = (Xc.T @ Xc) / (K - 1)
        at = _alignment_from_cov(S, d.lam[d.included], K, opts.resamples, resampler=resampler)
        p_jk = isotropy_jackknife_p(Xi, d.lam[d.included]) if opts.resamples > 0 else np.nan
        p = float(max(at.p_value, p_jk)) if np.isfinite(at.p_value) and np.isfinite(p_jk) else np.nan
        if np.isfinite(p):  # the tail rule (stats/isotropy.py); its permutations seeded per probe shape
            why, *tail = isotropy_tail_refusal(Xi, rng=np.random.default_rng([resampler.seed, 5, K, n]))
            p = np.nan if why else p
        align = (at.estimate, p, np.nan if why else at.p_value)
    return {"alignment_k": align[0], "isotropy_p": align[1], "alignment_p": align[1],
            "isotropy_p_rotation": align[2], "alignment_n": n if n >= 2 else 0,
            "tail_draws": tail[0], "tail_concentration_p": tail[1], "_note": why}


def _curvature_fields(d: ProbeData, opts: ProbeOptions, resampler) -> dict:
    """The test of alignment with curvature (permutation of the eigenvalues across the
    included directions, studentized slope; null when resampling is off)."""
    n = d.n_included
    p = np.nan
    if n >= MIN_DIRECTIONS_CI and opts.resamples > 0 and resampler is not None and d.n_samples >= 3:
        Xi = d.block.values[:, d.hessian][:, d.included]
        p = curvature_test(Xi, d.lam[d.included], resamples=opts.resamples,
                           _permutations=resampler.permutations(n)).p_value
    return {"curvature_p": p}


#: The parts of a relation row, in order (each: (ProbeData, ProbeOptions, resampler) -> dict).
ROW_PARTS = (_fit_fields, _spearman_fields, _ratio_fields, _alignment_fields, _curvature_fields)


def probe_relation(run, group: str, blk, opts: ProbeOptions,
                   resampler: Resampler | None, *, exact: dict | None = None) -> tuple[dict, dict]:
    """The relation row and the per-direction columns of one noise block.

    Parameters
    ----------
    run : varprinciple.io.RunLog
    group : str
        The run's group label.
    blk : varprinciple.io.NoiseBlock
    opts : ProbeOptions
    resampler : Resampler or None
        Source of Haar rotations and permutations (None when resampling is off).
    exact : dict, optional
        :func:`exact_groups` of the run: where it covers every column of ``blk``, b is fitted
        from the exact variances (``variance_input`` "exact"), else from the draws.

    Returns
    -------
    row : dict
        One ``relations`` row.
    cols : dict
        Per-direction arrays (``basis``, ``direction``, ``eigenvalue``, ``residual``,
        ``variance``, ``included``, ``reason``) and scalars identifying the probe; turned
        into the per-direction table by :func:`directions_frame`.
    """
    d = _prepare(blk, opts, _block_groups(blk, (exact or {}).get((int(blk.step), blk.source, blk.block))))
    row = {"run_id": run.run_id, "method": run.method, "group": group, "source": blk.source,
           "basis": "hessian", "step": int(blk.step), "block": blk.block}
    for part in ROW_PARTS:
        fields = part(d, opts, resampler)
        extra = fields.pop("_note", None)  # a part's caveat joins the row's note
        row.update(fields)
        if extra:
            row["note"] = _append(row.get("note"), extra)
    n_dir = blk.values.shape[1]
    reason_all = np.full(n_dir, RANDOM_REASON, dtype=object)
    reason_all[np.flatnonzero(d.hessian)] = d.reasons
    inc_all = np.zeros(n_dir, dtype=bool)
    inc_all[np.flatnonzero(d.hessian)[d.included]] = True
    cols = {
        "basis": blk.basis, "direction": blk.direction, "eigenvalue": blk.eigenvalue,
        "residual": blk.residual, "variance": d.variance, "included": inc_all, "reason": reason_all,
        "n": n_dir, "run_id": run.run_id, "method": run.method, "group": group, "source": blk.source,
        "step": int(blk.step), "block": blk.block, "n_samples": blk.n_samples,
    }
    return row, cols


def directions_frame(parts: list[dict]) -> pd.DataFrame:
    """The per-direction table from the ``cols`` of :func:`probe_relation` (one per probe)."""
    if not parts:
        return pd.DataFrame(columns=list(DIRECTION_COLUMNS))
    n = np.array([p["n"] for p in parts])
    data = {}
    for name in ("run_id", "method", "group", "source", "step", "block", "n_samples"):
        data[name] = np.repeat(np.array([p[name] for p in parts], dtype=object), n)
    for name in ("basis", "direction", "eigenvalue", "residual", "variance", "included", "reason"):
        data[name] = np.concatenate([p[name] for p in parts])
    df = pd.DataFrame(data)
    df["step"] = df["step"].astype("int64")
    df["n_samples"] = df["n_samples"].astype("int64")
    df["direction"] = df["direction"].astype("int64")
    return df[list(DIRECTION_COLUMNS)]


#: A source is flagged when its share of flagged probes is significantly above this rate
#: (binomial, level RARE_SOURCE_ALPHA): heavy but not rare-event tails stay below it (Student-t5
#: draws with block factors: <= 0.03 at K >= 20; Gaussian: <= 0.001).
RARE_PROBE_RATE = 0.05
#: Level of the source-level binomial test.
RARE_SOURCE_ALPHA = 0.05
#: The note of a probe whose interval, p and curvature_p are refused (see refuse_rare_draw_probes).
RARE_SOURCE_NOTE = ("no interval or p: rare large draws dominate this noise source ({m} of {M} probes of "
                    "{group}:{source} have one draw carrying >= {share:.0%} of a direction's variance), and "
                    "with K = {K} < {kmin} draws a probe that missed them is biased (docs/statistics.md §5.3)")
#: The note of a probe whose isotropy_p is refused because its source's probes show dominating draws.
ISOTROPY_SOURCE_NOTE = ("no isotropy_p: {m} of {M} probes of {group}:{source} have one draw carrying more of a "
                        "direction's variance than Gaussian tails allow, with tails not shown alike across "
                        "directions (where they differ the isotropy tests reject an isotropic covariance, "
                        "docs/statistics.md §5.3)")
#: The note of a probe with K >= MIN_DRAWS_RARE in such a source (interval kept: it held at K = 100).
RARE_SOURCE_KEPT_NOTE = ("rare large draws in this noise source ({m} of {M} probes); intervals hold from "
                         "K = {kmin} draws on such tails (docs/statistics.md §5.3)")


def _append(note, text):
    return text if note is None or (isinstance(note, float) and np.isnan(note)) else f"{note}; {text}"


def rare_draw_sources(relations: pd.DataFrame) -> dict[tuple, tuple[int, int]]:
    """The (group, source) pairs whose probes show rare large draws more often than light
    tails allow: ``{(group, source): (m flagged, M probes)}``.

    A probe is flagged when one draw carries at least ``RARE_DRAW_SHARE`` of an included
    direction's sum of squares with Bonferroni p < ``RARE_DRAW_ALPHA`` under Gaussian draws
    (:func:`varprinciple.stats.relation.draw_share`). A source is flagged when its m flagged
    probes out of M are improbable at the rate ``RARE_PROBE_RATE`` that heavy but not
    rare-event tails stay below: binomial P(>= m) <= ``RARE_SOURCE_ALPHA`` (1 flagged probe
    of 1, 2 of up to 7, 3 of up to 16, ...).
    """
    out: dict[tuple, tuple[int, int]] = {}
    if relations.empty or "draw_share_p" not in relations:
        return out
    from scipy import stats as sps
    for (g, src), sub in relations.groupby(["group", "source"], sort=True, dropna=False):
        p = sub["draw_share_p"].to_numpy(float)
        sh = sub["max_draw_share"].to_numpy(float)
        ok = np.isfinite(p)
        M = int(ok.sum())
        m = int(np.count_nonzero(ok & (p < RARE_DRAW_ALPHA) & (sh >= RARE_DRAW_SHARE)))
        if m and float(sps.binom.sf(m - 1, M, RARE_PROBE_RATE)) <= RARE_SOURCE_ALPHA:
            out[(g, src)] = (m, M)
    return out


def heavy_tail_sources(relations: pd.DataFrame) -> dict[tuple, tuple[int, int]]:
    """The (group, source) pairs whose probes show tails that may differ between directions
    (:func:`varprinciple.stats.isotropy.tails_differ`: a dominating draw, ``draw_share_p`` <
    ``RARE_DRAW_ALPHA``, that the probe's tail draws cannot show to be alike across directions;
    without the ``tail_draws`` / ``tail_concentration_p`` columns, every dominating draw)
    more often than the rate ``RARE_PROBE_RATE`` (binomial P(>= m) <= ``RARE_SOURCE_ALPHA``):
    ``{(group, source): (m, M)}``. Their probes' ``isotropy_p`` is refused (a probe that missed
    its rare draws looks Gaussian)."""
    out: dict[tuple, tuple[int, int]] = {}
    if relations.empty or "draw_share_p" not in relations:
        return out
    from scipy import stats as sps
    for (g, src), sub in relations.groupby(["group", "source"], sort=True, dropna=False):
        p = sub["draw_share_p"].to_numpy(float)
        ok = np.isfinite(p)
        M = int(ok.sum())
        nt = sub["tail_draws"].to_numpy(float) if "tail_draws" in sub else np.zeros(len(sub))
        pt = sub["tail_concentration_p"].to_numpy(float) if "tail_concentration_p" in sub else np.zeros(len(sub))
        K = sub["n_samples"].to_numpy(float) if "n_samples" in sub else np.full(len(sub), np.inf)
        m = int(sum(tails_differ(a, b, c, k) for a, b, c, k in zip(p[ok], nt[ok], pt[ok], K[ok])))
        if m and float(sps.binom.sf(m - 1, M, RARE_PROBE_RATE)) <= RARE_SOURCE_ALPHA:
            out[(g, src)] = (m, M)
    return out


def refuse_heavy_tail_isotropy(relations: pd.DataFrame) -> pd.DataFrame:
    """Null ``isotropy_p`` / ``alignment_p`` / ``isotropy_p_rotation`` (reason in ``note``) in
    every probe of the sources of :func:`heavy_tail_sources` that still has one (probes that
    showed a dominating draw themselves were refused by :func:`probe_relation`)."""
    flagged = heavy_tail_sources(relations)
    if not flagged or "isotropy_p" not in relations:
        return relations
    rel = relations.copy()
    notes = rel["note"].tolist() if "note" in rel else [None] * len(rel)
    cols = [c for c in ("isotropy_p", "alignment_p", "isotropy_p_rotation") if c in rel]
    for i, (g, src, p) in enumerate(zip(rel["group"], rel["source"], rel["isotropy_p"])):
        if (g, src) in flagged and np.isfinite(p):
            m, M = flagged[(g, src)]
            for c in cols:
                rel.iat[i, rel.columns.get_loc(c)] = np.nan
            notes[i] = _append(notes[i], ISOTROPY_SOURCE_NOTE.format(m=m, M=M, group=g, source=src))
    rel["note"] = notes
    return rel


def refuse_rare_draw_probes(relations: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Refuse (null ``ci_low``/``ci_high``/``p_value``/``curvature_p``, reason in ``note``)
    the probes with fewer than ``MIN_DRAWS_RARE`` draws of the sources flagged by
    :func:`rare_draw_sources` — every such probe, whether or not it saw a rare draw itself (a
    probe that missed them looks Gaussian and is biased); probes with more draws keep their
    interval with a note. Adds the bool column ``rare_draw_source``. Also refuses the
    ``isotropy_p`` of heavy-tailed sources (:func:`refuse_heavy_tail_isotropy`). Returns the
    new frame and the flagged sources."""
    if relations.empty:
        return relations, {}
    relations = refuse_heavy_tail_isotropy(relations)
    flagged = rare_draw_sources(relations)
    rel = relations.copy()
    rel["rare_draw_source"] = False
    if not flagged:
        return rel, flagged
    notes = rel["note"].tolist() if "note" in rel else [None] * len(rel)
    exact = (rel["variance_input"] == VarianceInput.EXACT.value).to_numpy() if "variance_input" in rel else \
        np.zeros(len(rel), dtype=bool)
    for i, (g, src, K) in enumerate(zip(rel["group"], rel["source"], rel["n_samples"])):
        if (g, src) not in flagged or exact[i]:  # b from exact variances: no draw enters it
            continue
        m, M = flagged[(g, src)]
        rel.iat[i, rel.columns.get_loc("rare_draw_source")] = True
        if int(K) < MIN_DRAWS_RARE:
            for c in ("ci_low", "ci_high", "p_value", "curvature_p"):
                rel.iat[i, rel.columns.get_loc(c)] = np.nan
            notes[i] = _append(notes[i], RARE_SOURCE_NOTE.format(m=m, M=M, group=g, source=src,
                                                                 share=RARE_DRAW_SHARE, K=int(K),
                                                                 kmin=MIN_DRAWS_RARE))
        else:
            notes[i] = _append(notes[i], RARE_SOURCE_KEPT_NOTE.format(m=m, M=M, kmin=MIN_DRAWS_RARE))
    rel["note"] = notes
    return rel, flagged
