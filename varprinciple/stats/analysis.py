"""``analyze``: the whole analysis of a log set behind ``varprinciple test``.

The data flow, one module per stage: per probe (run x step x source x block) the exponent b
and its companions (:mod:`.per_probe`); per group x source x block at one step per run, the
mean b over runs (:mod:`.group_level`); flatness summaries from ``flatness.parquet``
(:mod:`.flatness`); comparisons between (group, source) units with Holm over the
confirmatory family and optional TOST (:mod:`.comparisons`). The results contract (JSON
output v1 and the per-direction table) is owned by :mod:`varprinciple.results`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import io as vio
from .._version import __version__
from ..errors import InputError
from ..results import (COMPARISON_COLUMNS, DIRECTION_COLUMNS, FLATNESS_COLUMNS, RANDOM_REASON,
                       RESULTS_SCHEMA_VERSION, check_output_path, directions_path, directions_table,
                       int_or_null, results_dict, write_results)
from ._resampling import Resampler
from .comparisons import CONTROL_SOURCES, MAX_DEFAULT_GROUPS, Quantity, comparison_rows, parse_compare
from .defaults import ALPHA, CONFIDENCE, RESAMPLES, check_resamples
from .flatness import flatness_rows
from .gamma import gamma_analysis
from .group_level import analysed_steps, at_analysed_step, curvature_alignment_rows, group_rows
from .grouping import group_keys, parse_group_by, unique_labels
from .matched import LOSS_TOLERANCE, annotate_flatness_comparisons
from .per_probe import (ProbeOptions, directions_frame, exact_groups, exact_only_blocks, probe_relation,
                        refuse_rare_draw_probes)
from .psi_analysis import psi_analysis
from .relation import DEFAULT_FLOOR_REL, DEFAULT_RESIDUAL_FACTOR
from .replicates import find_networks, pair_keys

__all__ = ["analyze", "AnalysisResult", "Quantity", "DEFAULT_RESAMPLES", "CONTROL_SOURCES",
           "MAX_DEFAULT_GROUPS", "parse_compare", "directions_path", "check_output_path",
           "JSON_SCHEMA_VERSION", "DIRECTION_COLUMNS", "RANDOM_REASON"]

logger = logging.getLogger(__name__)

#: The results JSON's version (owned by :data:`varprinciple.results.RESULTS_SCHEMA_VERSION`).
JSON_SCHEMA_VERSION = RESULTS_SCHEMA_VERSION
#: Default number of resamples (:data:`varprinciple.stats.defaults.RESAMPLES`).
DEFAULT_RESAMPLES = RESAMPLES


@dataclass(frozen=True)
class AnalysisResult:
    """Everything ``varprinciple test`` computes; ``to_json_dict`` gives JSON output v1.

    Attributes
    ----------
    relations : DataFrame
        One row per run x step x source x block (basis hessian).
    groups : DataFrame
        One row per group x source x block at the analysed step.
    comparisons : DataFrame
        One row per compared pair of units (slope and flatness quantities).
    flatness : DataFrame
        Per group x quantity x source x block summaries of ``flatness.parquet``.
    directions : DataFrame
        The per-direction table (one row per run, step, source, block, basis, direction).
    skipped : list of dict
        Invalid runs left out (``--skip-invalid``).
    identical : list of list of str
        Run ids whose noise tables are identical (not independent replicates).
    settings, provenance : dict
    notes : list of str
        Things the reader should know (e.g. no default comparison family).
    extra : dict
        Optional top-level JSON keys: ``variance_flatness`` and ``loss_profiles`` (the
        trajectory's ψ records and loss profiles, when runs logged them; docs/flatness.md).
    """

    relations: pd.DataFrame
    groups: pd.DataFrame
    comparisons: pd.DataFrame
    flatness: pd.DataFrame
    directions: pd.DataFrame
    skipped: list = field(default_factory=list)
    identical: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        """The JSON output v1 as a dict (undefined values are None)."""
        return results_dict(relations=self.relations, groups=self.groups, comparisons=self.comparisons,
                            flatness=self.flatness, settings=self.settings, provenance=self.provenance,
                            skipped=self.skipped, identical=self.identical, notes=self.notes,
                            extra=self.extra)

    def directions_table(self) -> pa.Table:
        """The per-direction table as an Arrow table with the documented dtypes."""
        return directions_table(self.directions)

    def write(self, json_path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the JSON and its per-direction table beside it (both atomic); see
        :func:`varprinciple.results.directions_path`."""
        return write_results(json_path, self.to_json_dict(), self.directions_table())

    def summary(self, *, caveats: bool = True) -> str:
        """A readable summary of the analysis: its tables and, with ``caveats``, every row note,
        study-wide note and skipped or identical run. The CLI prints the findings block
        (:func:`varprinciple.report.findings_text`, each caveat beside its number) and then
        ``summary(caveats=False)``, so that no caveat is printed twice."""
        from ._summary import format_summary
        return format_summary(self, caveats=caveats)


# ============================================================================ options


def _analyze_iv(confidence, alpha, equivalence_margin, seed, resamples, step, floor_rel, residual_factor):
    def num(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)

    if not (num(confidence) and 0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence!r}.")
    if not (num(alpha) and 0 < alpha < 0.5):
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    if equivalence_margin is not None and not (num(equivalence_margin) and np.isfinite(equivalence_margin)
                                               and equivalence_margin > 0):
        raise InputError(f"`equivalence_margin` must be a positive number (exponent units); "
                         f"got {equivalence_margin!r}.")
    if seed is not None and not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise InputError(f"`seed` must be an integer >= 0 or None (fresh entropy); got {seed!r}.")
    check_resamples(resamples)
    if step is not None and not (isinstance(step, (int, np.integer)) and not isinstance(step, bool)
                                 and step >= 0):
        raise InputError(f"`step` must be an integer >= 0; got {step!r}.")
    if not (num(floor_rel) and 0 <= floor_rel < 1):
        raise InputError(f"`floor_rel` must be in [0, 1); got {floor_rel!r}.")
    if not (num(residual_factor) and residual_factor >= 0):
        raise InputError(f"`residual_factor` must be >= 0; got {residual_factor!r}.")



# ============================================================================ analyze


#: Note of a slope comparison with a side whose group test was refused for rare large draws.
RARE_COMPARISON_NOTE = ("a side's runs are in a rare-draw source with fewer than 100 draws: each run's b is "
                        "biased (docs/statistics.md §1); the difference holds only where both sides share that bias")


def _note_rare_draw_comparisons(comp_rows: list[dict], grp_rows: list[dict]) -> None:
    """Append :data:`RARE_COMPARISON_NOTE` to the slope comparisons of refused groups (in place)."""
    from .group_level import RARE_GROUP_NOTE
    marker = RARE_GROUP_NOTE.split(";")[0][:40]
    refused = {(g["group"], g["source"], g["block"]) for g in grp_rows if marker in (g.get("note") or "")}
    for r in comp_rows:
        if r["quantity"] != Quantity.SLOPE:
            continue
        if (r["label_a"], r["source_a"], r["block"]) in refused or (r["label_b"], r["source_b"], r["block"]) in refused:
            r["note"] = RARE_COMPARISON_NOTE if not r.get("note") else f"{r['note']}; {RARE_COMPARISON_NOTE}"


def _progress(iterable, total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc="analysing runs", unit="run", leave=False)


def analyze(
    source: str | os.PathLike | vio.LogSet,
    *,
    confidence: float = CONFIDENCE,
    alpha: float = ALPHA,
    equivalence_margin: float | None = None,
    seed: int | None = 0,
    resamples: int = DEFAULT_RESAMPLES,
    group_by: str | Sequence[str] | None = None,
    step: int | None = None,
    compare: str | Sequence[str] | None = None,
    skip_invalid: bool = False,
    floor_rel: float = DEFAULT_FLOOR_REL,
    residual_factor: float = DEFAULT_RESIDUAL_FACTOR,
    progress: bool | None = None,
) -> AnalysisResult:
    """Analyse a log set: per-run exponents, group means, comparisons (``varprinciple test``).

    Parameters
    ----------
    source : path or LogSet
        A log-set directory (read with :func:`varprinciple.io.read_logset`) or a LogSet.
    confidence : float, default 0.95
        Level of every two-sided interval.
    alpha : float, default 0.05
        Level of the TOST (its interval is at 1 - 2 alpha).
    equivalence_margin : float, optional
        Equivalence margin for slope comparisons (exponent units); None: no TOST.
    seed : int or None, default 0
        Seed of every resampling-based statistic. None draws fresh entropy
        (``numpy.random.SeedSequence().entropy``) and records it in the results as
        ``settings.seed_entropy``: ``analyze(..., seed=that value)`` reproduces the numbers.
    resamples : int, default 999
        Bootstrap replicates and Haar rotations: 0 switches both off (their fields null),
        otherwise at least 99.
    group_by : str or sequence of str, optional
        run.json keys defining groups (comma-separated; dotted paths allowed).
    step : int, optional
        The probe step analysed at group level (default: each run's last probe step).
    compare : str or sequence of str, optional
        Declared comparison pairs ``"UNIT_A vs UNIT_B"`` (UNIT = GROUP or GROUP:SOURCE).
    skip_invalid : bool, default False
        Analyse the valid runs and list the invalid ones instead of raising.
    floor_rel, residual_factor : float
        Exclusion floors (see :func:`varprinciple.stats.exclusion_reasons`).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).

    Returns
    -------
    AnalysisResult

    Examples
    --------
    >>> import numpy as np
    >>> from varprinciple.simulate import simulate_logset
    >>> logset, _ = simulate_logset(methods={"sgd": 1.0}, runs_per_method=3,
    ...                             sources=("sgd",), rng=np.random.default_rng(0))
    >>> res = analyze(logset, resamples=0)
    >>> res.groups[["group", "source", "n_runs"]].to_dict("records")
    [{'group': 'sgd', 'source': 'sgd', 'n_runs': 3}]
    >>> bool(res.groups["p_value"].iloc[0] < 0.05)
    True
    """
    _analyze_iv(confidence, alpha, equivalence_margin, seed, resamples, step, floor_rel, residual_factor)
    gb = parse_group_by(group_by)
    declared = parse_compare(compare)
    if isinstance(source, vio.LogSet):
        logset = source
        input_name = str(source.root)
    elif isinstance(source, (str, os.PathLike)):
        logset = vio.read_logset(source, skip_invalid=skip_invalid)
        input_name = str(source)
    else:
        raise InputError(f"`source` must be a log-set path or a LogSet; got {type(source).__name__}.")
    runs = logset.runs
    if not runs:
        raise InputError(f"{input_name}: no valid run to analyse.")
    B = int(resamples)
    # the entropy every resampling stream derives from: the seed given, else fresh (recorded)
    entropy = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
    resampler = Resampler(B, entropy) if B > 0 else None
    keys = group_keys([r.meta for r in runs], group_by=gb)
    labels = unique_labels(keys)
    logger.info("analysing %d runs (%d resamples)", len(runs), B)

    t0 = time.perf_counter()
    opts = ProbeOptions(confidence=confidence, floor_rel=floor_rel, residual_factor=residual_factor, resamples=B)
    rel_rows: list[dict] = []
    dir_parts: list[dict] = []
    for run, label in _progress(zip(runs, labels), len(runs), progress):
        exact = exact_groups(run)  # exact-variance groups: b from them where present (issue 19)
        for blk in [*run.blocks, *exact_only_blocks(run, exact)]:
            row, cols = probe_relation(run, label, blk, opts, resampler, exact=exact)
            rel_rows.append(row)
            dir_parts.append(cols)
    relations = pd.DataFrame(rel_rows)
    # sources with rare large draws: below MIN_DRAWS_RARE draws every probe's interval is refused
    relations, rare_sources = refuse_rare_draw_probes(relations)
    directions = directions_frame(dir_parts)
    logger.info("analysed %d probes of %d runs in %.1f s", len(rel_rows), len(runs), time.perf_counter() - t0)

    # ---- groups at the analysed step of each run
    notes: list[str] = []
    sel = analysed_steps(runs, step, notes)
    key_of = dict(zip(labels, keys))
    networks = find_networks(runs, labels, logset.identical)
    if not relations.empty:
        relations["network"] = [networks.network_of[r] for r in relations["run_id"]]
    notes += networks.notes()
    for ids, why in networks.merged:
        logger.warning("runs %s are one network (%s); counted once", ", ".join(ids), why)
    at_step = at_analysed_step(relations, sel)
    grp_rows, slope_units = group_rows(at_step, key_of, confidence, networks.network_of, notes)
    groups = int_or_null(pd.DataFrame(grp_rows), "step")

    # ---- flatness
    flat_rows, flat_units = flatness_rows(runs, labels, key_of, sel, confidence, networks.network_of)
    # psi from the optional trajectory tables: group rows (quantity "psi") join the flatness
    # summaries, its comparisons (own Holm family, TOST at the equivalence margin) the others
    pair_of = pair_keys(runs, networks.network_of)
    psi = psi_analysis(runs, labels, key_of=key_of, confidence=confidence, alpha=alpha,
                       margin=equivalence_margin, resamples=B, seed=entropy, network_of=networks.network_of,
                       pair_of=pair_of)
    # mean Spearman r(lambda, s^2) over networks: alignment with curvature at group level
    flat_rows = flat_rows + psi.groups + curvature_alignment_rows(at_step, key_of, confidence,
                                                                  networks.network_of)
    # gamma of C_ii ~ H_ii^gamma per layer from the optional diagonal.parquet (stats.gamma)
    gam = gamma_analysis(runs, labels, key_of=key_of, sel=sel, confidence=confidence,
                         network_of=networks.network_of)
    flat_rows = flat_rows + gam.groups
    flatness = int_or_null(pd.DataFrame(flat_rows, columns=list(FLATNESS_COLUMNS)), "step")

    # ---- comparisons
    step_values = sorted(set(sel.values()))
    step_label = step_values[0] if len(step_values) == 1 else None
    units_by_q = {Quantity.SLOPE.value: slope_units}
    units_by_q.update(flat_units)
    comp_rows = comparison_rows(units_by_q, declared, conf=confidence, alpha=alpha, margin=equivalence_margin,
                                step_label=step_label, notes=notes, pair_of=pair_of)
    _note_rare_draw_comparisons(comp_rows, grp_rows)
    comparisons = pd.DataFrame(comp_rows + psi.comparisons, columns=list(COMPARISON_COLUMNS))
    # the groups' training losses (and the loss-adjusted difference) beside every flatness comparison
    comparisons = annotate_flatness_comparisons(comparisons, runs, labels, sel, tolerance=LOSS_TOLERANCE,
                                                confidence=confidence, network_of=networks.network_of)
    extra = {k: v for k, v in (("variance_flatness", psi.records), ("loss_profiles", psi.profiles),
                               ("gamma", gam.runs)) if v}

    settings = {
        "confidence": confidence, "alpha": alpha, "equivalence_margin": equivalence_margin, "seed": seed,
        "seed_entropy": entropy, "resamples": B, "group_by": list(gb) if gb else None, "step": step,
        "compare": [f"{a} vs {b}" for a, b in declared] if declared else None, "skip_invalid": skip_invalid,
        "floor_rel": floor_rel, "residual_factor": residual_factor,
        "control_sources": list(CONTROL_SOURCES), "max_default_groups": MAX_DEFAULT_GROUPS,
        "slope_ci": "OLS of jackknife bias-corrected log variances on log eigenvalues; sampling "
                    "covariance by the delete-one-draw jackknife + HC2 leverage-adjusted direction "
                    "scatter; Student t with Bell-McCaffrey/Satterthwaite df (the smaller of the df under "
                    "a residual-based and a design-based working covariance); no interval below 4 "
                    "directions (docs/statistics.md)",
        "ratio_ci": "Hessian/random variance ratio: delete-one-draw jackknife + between-random-direction "
                    "variance, Satterthwaite df capped at (m - 1) SE^2 / V_d; Hessian directions fixed",
        "group_ci": "one-sample t over runs; beside it the median with an order-statistic interval, "
                    "one-sided Wilcoxon signed-rank and sign p, and outlying networks (modified z > 3.5)",
        "rare_draws": "a probe is flagged when one draw carries >= 80% of a direction's sum of squares "
                      "(Bonferroni p < 0.001 under Gaussian draws); a (group, source) whose share of flagged probes "
                      "is significantly above 5% (binomial p <= 0.05) refuses every probe's interval, p and "
                      "curvature_p below K = 100 draws, its group test of b, and its curvature_alignment test "
                      "(reasons in note; docs/statistics.md)",
        "isotropy_test": "isotropy_p = max(rotation-test p, draw-level jackknife p of log alignment_k): a "
                         "test of an isotropic covariance; isotropy_p_rotation is the rotation test alone; both "
                         "are refused (null, reason in note) in a probe where one draw carries more of a "
                         "direction's variance than Gaussian tails allow (draw_share_p < 0.001) unless it has K >= "
                         "100 draws and its tail draws (tail_draws >= 4 beyond 4.5 robust SDs) are not "
                         "concentrated in some directions (tail_concentration_p >= 0.05, the smaller p of the "
                         "tests at 4.5 and 3.5 robust SDs: tails alike), and in every probe of a (group, source) "
                         "with such refusals significantly above 5% (binomial p <= 0.05)",
        "replicates": "independently trained networks: runs with identical noise tables, the same "
                      "checkpoint_fingerprint, or the same training seed and eigenvalues are one network, "
                      "counted once (the mean over its runs); n_runs and df count networks",
        "comparison_test": "paired t (units share networks, or runs collected with seed_scheme "
                           "'matched' share init and data-order seeds) or Welch t",
        "multiplicity": "Holm within each quantity's confirmatory family",
        "tost_multiplicity": "tost_p and equivalent are per comparison, NOT adjusted for multiplicity; "
                             "tost_p_adjusted and equivalent_adjusted: Holm over the TOST p-values of each "
                             "quantity's confirmatory family (controls the chance of any false 'equivalent')",
        "effect_size": "bonett_d (independent: mean difference over sqrt((s_a^2 + s_b^2)/2), no equal-variance "
                       "assumption; generalized pivotal interval) or d_z (paired; noncentral-t interval), "
                       "bias-corrected by the exact J where defined (a d_z of 2 pairs is reported uncorrected, "
                       "with a note)",
        "prob_superiority": "P(a > b) for a random network of each unit (independent) or P(a - b > 0) "
                            "for one network (paired), under the normal model of the t tests with unequal "
                            "variances: Phi((mu_a - mu_b)/sqrt(sigma_a^2 + sigma_b^2)) with its generalized "
                            "pivotal interval, or Phi(delta_z) with d_z's interval mapped through Phi; "
                            "prob_superiority_empirical: Mann-Whitney U/(n_a n_b) or the share of positive "
                            "paired differences (no interval)",
        "psi_ci": "stationary variances (AR(1) window correction per PC); basic interval of a parametric "
                  "AR(1) bootstrap (PCs and widths fixed), widened for scatter about the power law and by "
                  "t(df = 2 n_eff_min); refused below n_eff 1.05 or a lever arm of 0.2 decades, caveat below "
                  "n_eff 5; p for psi > 0 inverts it (docs/flatness.md)",
        "loss_tolerance": LOSS_TOLERANCE,
        "gamma_ci": "gamma of C_ii ~ H_ii^gamma per layer (diagonal.parquet): per run the Theil-Sen slope of "
                    "log c_ii on log h_ii over sampled parameters with h_ii > 0 (quantity gamma; OLS as "
                    "gamma_ols), then a one-sample t interval over networks, p one-sided gamma > 1; refused "
                    "below 3 networks (docs/statistics.md)",
    }
    from .. import provenance as _prov
    provenance = {
        "package_version": __version__, "input": input_name, "created": _prov.created(),
        "n_runs": len(runs), "n_skipped": len(logset.skipped),
        **_prov.package_versions(("numpy", "scipy", "pandas")),
    }
    if logset.identical:
        notes.append("runs with identical noise tables (not independent replicates): "
                     + "; ".join(", ".join(x) for x in logset.identical))
    return AnalysisResult(
        relations=relations, groups=groups, comparisons=comparisons, flatness=flatness,
        directions=directions, skipped=[s.to_dict() for s in logset.skipped],
        identical=[list(x) for x in logset.identical], settings=settings, provenance=provenance,
        notes=notes, extra=extra)
