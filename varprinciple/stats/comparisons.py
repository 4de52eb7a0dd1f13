"""Comparisons between units (group x noise source): families, Holm, TOST, effect sizes.

A *unit* is one group's values of a quantity (per-network slopes, or per-network log
flatness) for one noise source and block, keyed by network id (a run id; re-probes of one
network share it, :mod:`.replicates`). The confirmatory family is either the declared
``--compare`` pairs or a default rule (docs/statistics.md, "Comparisons"), which falls back
to the cross pairs, with a note, when no two groups share a noise source. Holm is applied
within each quantity's family to the two-sided p-values and, separately, to the TOST
p-values (``tost_p_adjusted``; ``tost_p``/``equivalent`` stay per comparison). Control pairs
(against the isotropic control source) are reported but never adjusted. Every row carries
a standardized effect (:func:`.effect_size.standardized_difference`: Bonett's d for
independent units, d_z for paired) and the probability of superiority
(:func:`.effect_size.prob_superiority`, unequal variances allowed), each with its interval.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from ..errors import InputError
from .effect_size import standardized_difference, superiority_from
from .inference import compare_groups, holm

__all__ = ["Quantity", "CONTROL_SOURCES", "MAX_DEFAULT_GROUPS", "Unit", "parse_compare", "compare_units",
           "family_pairs", "comparison_rows", "compare_option", "adjust_family"]

#: Noise sources that are controls: compared, reported, never in the confirmatory family.
CONTROL_SOURCES = ("isotropic",)
#: With at most this many non-control units, all their pairs form the default family.
MAX_DEFAULT_GROUPS = 6


class Quantity(StrEnum):
    """Quantities compared between groups."""

    SLOPE = "slope"
    LOG_LAMBDA_MAX = "log_lambda_max"
    LOG_HESSIAN_TRACE = "log_hessian_trace"
    #: the filter-normalised random-profile width (:mod:`.outcomes`), log scale
    LOG_FILTER_WIDTH = "log_filter_width"
    #: test accuracy and test − train loss at the analysed step (:mod:`.outcomes`)
    TEST_ACCURACY = "test_accuracy"
    GENERALISATION_GAP = "generalisation_gap"


def parse_compare(compare: str | Sequence[str] | None) -> list[tuple[str, str]] | None:
    """Parse ``--compare`` pairs ``"UNIT_A vs UNIT_B"`` (UNIT = ``GROUP`` or ``GROUP:SOURCE``).

    Several pairs may be given as a sequence or separated by ``;``.

    Examples
    --------
    >>> parse_compare("sgd:sgd vs dropout:dropout; sgd vs gd")
    [('sgd:sgd', 'dropout:dropout'), ('sgd', 'gd')]
    """
    if compare is None:
        return None
    items = compare.split(";") if isinstance(compare, str) else [p for c in compare for p in str(c).split(";")]
    pairs = []
    for item in items:
        if not item.strip():
            continue
        parts = item.split(" vs ")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise InputError(f"`compare` pairs must read 'UNIT_A vs UNIT_B' (UNIT = GROUP or GROUP:SOURCE); "
                             f"got {item.strip()!r}.")
        pairs.append((parts[0].strip(), parts[1].strip()))
    if not pairs:
        raise InputError(f"`compare` must name at least one pair 'UNIT_A vs UNIT_B'; got {compare!r}.")
    return pairs



@dataclass
class Unit:
    label: str
    key: dict
    source: str | None
    block: str | None
    values: dict  # run_id -> value
    note: str | None = None  # a caveat of the unit's values (e.g. a censored width): carried to its comparisons

    @property
    def control(self) -> bool:
        return self.source in CONTROL_SOURCES

    @property
    def name(self) -> str:
        return self.label if self.source is None else f"{self.label}:{self.source}"


def _keyed(values: dict, pair_of) -> dict:
    """``values`` re-keyed by pairing key (:func:`.replicates.pair_keys`); unchanged if a key
    would repeat within the unit (never pair on an ambiguous key)."""
    if not pair_of:
        return values
    out = {pair_of.get(k, k): v for k, v in values.items()}
    return out if len(out) == len(values) else values


def compare_units(a: Unit, b: Unit, quantity: str, *, conf, alpha, margin, step, pair_of=None) -> dict | None:
    """One comparison row, paired on the networks (or matched seeds, ``pair_of``) both share."""
    av, bv = _keyed(a.values, pair_of), _keyed(b.values, pair_of)
    common = sorted(set(av) & set(bv))
    note = None
    if common:
        paired = True
        if set(av) != set(bv):
            note = f"paired on the {len(common)} runs both units share"
        va = np.array([av[r] for r in common])
        vb = np.array([bv[r] for r in common])
    else:
        paired = False
        va = np.array(list(av.values()))
        vb = np.array(list(bv.values()))
    va = va[np.isfinite(va)] if not paired else va
    vb = vb[np.isfinite(vb)] if not paired else vb
    if paired:
        ok = np.isfinite(va) & np.isfinite(vb)
        va, vb = va[ok], vb[ok]
    if va.size == 0 or vb.size == 0:
        return None
    c = compare_groups(va, vb, paired=paired, confidence=conf, alpha=alpha, margin=margin)
    es = standardized_difference(va, vb, paired=paired, confidence=conf)
    ps = superiority_from(es, va, vb)
    if es.note:
        note = es.note if note is None else f"{note}; {es.note}"
    for u in (a, b):  # the units' own caveats travel with the difference
        if u.note:
            note = f"{u.name}: {u.note}" if note is None else f"{note}; {u.name}: {u.note}"
    return {
        "quantity": quantity, "label_a": a.label, "key_a": a.key, "source_a": a.source,
        "label_b": b.label, "key_b": b.key, "source_b": b.source, "block": a.block, "step": step,
        "paired": c.paired, "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
        "p_value": c.p_value, "p_adjusted": np.nan, "confirmatory": False, "se": c.se, "df": c.df,
        "n_a": c.n_a, "n_b": c.n_b, "margin": c.margin, "tost_p": c.tost_p, "equivalent": c.equivalent,
        "tost_ci_low": c.tost_ci_low, "tost_ci_high": c.tost_ci_high,
        "tost_p_adjusted": np.nan, "equivalent_adjusted": None,
        "effect_size": es.estimate, "effect_size_ci_low": es.ci_low, "effect_size_ci_high": es.ci_high,
        "effect_size_kind": es.kind, "prob_superiority": ps.estimate, "prob_superiority_ci_low": ps.ci_low,
        "prob_superiority_ci_high": ps.ci_high, "prob_superiority_empirical": ps.empirical,
        "prob_superiority_method": ps.method, "note": note,
    }


def _resolve(name: str, units: list[Unit]) -> list[Unit]:
    exact = [u for u in units if u.name == name]
    if exact:
        return exact
    return [u for u in units if u.label == name]


def compare_option(pairs) -> str:
    """The ``--compare`` options that declare ``pairs`` of units (shell-quoted).

    Examples
    --------
    >>> compare_option([(Unit("sgd", {}, "sgd", None, {}), Unit("dropout", {}, "dropout", None, {}))])
    "--compare 'sgd:sgd vs dropout:dropout'"
    """
    return " ".join(f"--compare {shlex.quote(f'{a.name} vs {b.name}')}" for a, b in pairs)


def _cross_pairs(main: list[Unit], blk, quantity: str, notes: list[str]) -> list[tuple[Unit, Unit]]:
    """The default family when no pair shares a group or a noise source (each group logs only
    its own source): every pair of units of different groups, with a note saying why."""
    where = f" at block {blk}" if blk is not None else ""
    groups = {u.label for u in main}
    if len(groups) < 2:
        what = f"only {main[0].name}" if main else "no non-control unit"
        notes.append(f"{quantity}{where}: no comparison in the default family ({what}; the isotropic "
                     "control is compared separately).")
        return []
    pairs = [(a, b) for a, b in itertools.combinations(main, 2) if a.label != b.label]
    notes.append(f"{quantity}{where}: no two groups share a noise source and no group logs two, so the default "
                 "family holds the cross pairs (they differ in both training method and noise source): "
                 f"{'; '.join(f'{a.name} vs {b.name}' for a, b in pairs)}; to declare them yourself: "
                 f"{compare_option(pairs)}")
    return pairs


def family_pairs(units: list[Unit], declared, notes: list[str], quantity: str):
    """(confirmatory pairs, control pairs) of units (each list of (a, b))."""
    by_block: dict[Any, list[Unit]] = {}
    for u in units:
        by_block.setdefault(u.block, []).append(u)
    conf_pairs, ctrl_pairs = [], []
    if declared is not None:
        for sa, sb in declared:
            ua, ub = _resolve(sa, units), _resolve(sb, units)
            if not ua or not ub:
                avail = sorted({u.name for u in units} | {u.label for u in units})
                bad = sa if not ua else sb
                raise InputError(f"`compare`: no unit {bad!r} for quantity {quantity}; units are: "
                                 f"{', '.join(avail)}.")
            n_before = len(conf_pairs)
            for a in ua:
                for b in ub:
                    if a is b or a.block != b.block:
                        continue
                    if len(ua) > 1 or len(ub) > 1:  # GROUP without source: match sources,
                        if a.source != b.source or a.control:  # never expand into a control
                            continue
                    conf_pairs.append((a, b))
            if len(conf_pairs) == n_before:
                raise InputError(f"`compare`: {sa!r} vs {sb!r} gives no comparison for quantity {quantity} "
                                 "(the same unit, different blocks, or no shared non-control source).")
        return conf_pairs, ctrl_pairs
    for blk, us in by_block.items():
        main = [u for u in us if not u.control]
        ctrl = [u for u in us if u.control]
        n_groups = len({u.label for u in main})
        if n_groups > MAX_DEFAULT_GROUPS:
            notes.append(f"{quantity}: {n_groups} groups (> {MAX_DEFAULT_GROUPS}) at block "
                         f"{blk if blk is not None else 'all'}; declare the confirmatory pairs with --compare.")
            continue
        # all pairs of groups within each noise source, and the noise sources of one group
        # against each other (paired: the same runs); not pairs differing in both
        pairs = [(a, b) for a, b in itertools.combinations(main, 2) if a.source == b.source or a.label == b.label]
        if not pairs:
            pairs = _cross_pairs(main, blk, quantity, notes)
        conf_pairs += pairs
        for c in ctrl:
            ctrl_pairs += [(m, c) for m in main if m.label == c.label]
    return conf_pairs, ctrl_pairs


def adjust_family(rows: list[dict], *, alpha: float) -> None:
    """Mark ``rows`` as one confirmatory family: Holm over their p-values and, separately,
    over their TOST p-values (``tost_p_adjusted``, ``equivalent_adjusted``); in place."""
    adj = holm([r["p_value"] for r in rows])
    tost_adj = holm([r["tost_p"] for r in rows])
    for r, pa_, ta_ in zip(rows, adj, tost_adj):
        r["p_adjusted"] = pa_
        r["confirmatory"] = True
        r["tost_p_adjusted"] = ta_
        r["equivalent_adjusted"] = bool(ta_ < alpha) if np.isfinite(ta_) else None


def comparison_rows(units_by_q: dict[str, list[Unit]], declared, *, conf, alpha, margin, step_label,
                 notes, pair_of=None) -> list[dict]:
    rows: list[dict] = []
    for q, units in units_by_q.items():
        decl = declared
        if declared is not None and q != Quantity.SLOPE:
            # flatness quantities: the declared pairs at group level
            decl = [(a.rsplit(":", 1)[0] if not _resolve(a, units) else a,
                     b.rsplit(":", 1)[0] if not _resolve(b, units) else b) for a, b in declared]
            decl = list(dict.fromkeys((a, b) for a, b in decl
                                      if _resolve(a, units) and _resolve(b, units) and a != b))
        fam, ctrl = family_pairs(units, decl, notes, q)
        m = margin if q == Quantity.SLOPE else None
        fam_rows = [r for a, b in fam
                    if (r := compare_units(a, b, q, conf=conf, alpha=alpha, margin=m, step=step_label,
                                         pair_of=pair_of))]
        adjust_family(fam_rows, alpha=alpha)
        rows += fam_rows
        rows += [r for a, b in ctrl
                 if (r := compare_units(a, b, q, conf=conf, alpha=alpha, margin=m, step=step_label,
                                         pair_of=pair_of))]
    return rows
