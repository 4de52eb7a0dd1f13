"""The claims table: each published claim re-tested with an estimate, a CI, a Holm p and a verdict.

A :class:`ClaimSpec` declares one claim (written in the study manifest before any run, see
``docs/study.md``): which results rows estimate it (a table of the results JSON and filters
on it), the null value, the direction (``greater``, ``less``) or ``equivalent`` (TOST within
``±margin``), and its multiplicity family. :func:`claims_table` reads only results JSONs
(JSON output v1 of ``varprinciple test``, one per experiment) and returns one
:class:`ClaimRow` per matching results row; Holm is applied within each family.

Verdict rules (α = the study's alpha; CI at the study's confidence; p Holm-adjusted within
the claim's family):

* directional claim (θ > θ0, or θ < θ0): **supported** when p < α; **not supported** when
  the CI lies entirely on the other side of θ0 (it excludes every effect in the claimed
  direction); otherwise **inconclusive at this power**.
* equivalence claim (|θ − θ0| < Δ, TOST): **equivalent within ±Δ** when the TOST p < α;
  **different (outside ±Δ)** when the CI lies entirely outside [θ0 − Δ, θ0 + Δ] (the
  estimate, not the power, decides it); otherwise **inconclusive at this power**.
* **not evaluated**: no results row matched (the reason is given, e.g. a quantity the
  analysis does not compute yet).

Every number comes from a t statistic on the results row's own (estimate, se, df): the
one-sided t p of a directional claim, the statistics layer's TOST on (difference − θ0, se,
df) of an equivalence claim, and the statistics layer's Holm
(:func:`varprinciple.stats.inference.holm`) within the family. Rows that carry no
``se``/``df`` (the ``flatness`` table's t intervals over runs) are read as that t interval,
df = n_runs − 1.

This module is the claim model; :mod:`varprinciple.report.study_page` only renders its rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd
from scipy import stats as sps

from ..errors import InputError
from ..run_json import parse_run_name
from ..stats.defaults import ALPHA, CONFIDENCE
from ..stats.inference import holm, tost_from

__all__ = ["ClaimKind", "Verdict", "ClaimSpec", "ClaimRow", "claims_table", "claims_frame", "verdict_of",
           "verdict_text", "label_fields", "CLAIM_TABLES"]


class ClaimKind(StrEnum):
    """Direction of a claim about θ against its null θ0."""

    GREATER = "greater"
    LESS = "less"
    EQUIVALENT = "equivalent"


class Verdict(StrEnum):
    SUPPORTED = "supported"
    NOT_SUPPORTED = "not supported"
    EQUIVALENT = "equivalent"
    DIFFERENT = "different"
    INCONCLUSIVE = "inconclusive at this power"
    NOT_EVALUATED = "not evaluated"


#: results JSON lists a claim can read, with the field holding each row's estimate
CLAIM_TABLES = {"groups": "slope", "flatness": "estimate", "comparisons": "difference"}
_FILTERS = {"source", "methods", "quantity", "source_a", "source_b", "methods_a", "methods_b", "same_group",
            "block"}


@dataclass(frozen=True)
class ClaimSpec:
    """One declared claim.

    Parameters
    ----------
    id : str
        Short identifier (``flatter_lambda``).
    family : str
        Multiplicity family: Holm is applied over all rows of all claims sharing it.
    text : str
        The claim in words.
    quantity : str
        What is estimated (shown in the table).
    table : str
        ``groups``, ``flatness`` or ``comparisons`` (a list of the results JSON).
    kind : ClaimKind
    null : float
        θ0.
    margin : float, optional
        Δ of an equivalence claim (required for ``equivalent``).
    experiments : tuple of str
        Experiments whose results are read (empty: all).
    select : mapping
        Filters on the rows: ``source``, ``quantity``, ``block``, ``methods`` (training
        methods of the group); for comparisons ``source_a``, ``source_b``, ``methods_a``,
        ``methods_b`` (a row matching with a and b swapped is read with its sign flipped) and
        ``same_group`` (both sides the same group, i.e. paired source comparisons); ``block``
        reads the per-block rows of that block (``"*"``: of every block, one row each);
        without it only whole-network rows are read.
    scale : str, optional
        ``half_lr``: multiply estimate and CI by lr/2 (lr parsed from the group label), the
        Edge-of-Stability ratio λ_max·η/2.
    pending : str, optional
        Why the claim may have no rows yet (shown when none match).
    controls : tuple of str
        Ids of the claims that control this one (the study page shows them beside it).
    """

    id: str
    family: str
    text: str
    quantity: str
    table: str
    kind: ClaimKind
    null: float = 0.0
    margin: float | None = None
    experiments: tuple[str, ...] = ()
    select: Mapping[str, Any] = field(default_factory=dict)
    scale: str | None = None
    pending: str | None = None
    controls: tuple[str, ...] = ()

    def __post_init__(self):
        where = f"claim {self.id!r}"
        if self.table not in CLAIM_TABLES:
            raise InputError(f"{where}: `table` must be one of {sorted(CLAIM_TABLES)}; got {self.table!r}.")
        try:
            object.__setattr__(self, "kind", ClaimKind(self.kind))
        except ValueError:
            raise InputError(f"{where}: `kind` must be one of {[k.value for k in ClaimKind]}; "
                             f"got {self.kind!r}.") from None
        if self.kind is ClaimKind.EQUIVALENT and not (isinstance(self.margin, (int, float)) and self.margin > 0):
            raise InputError(f"{where}: an equivalence claim needs `margin` > 0; got {self.margin!r}.")
        bad = sorted(set(self.select) - _FILTERS)
        if bad:
            raise InputError(f"{where}: unknown `select` key {bad[0]!r}; allowed: {sorted(_FILTERS)}.")
        if self.scale not in (None, "half_lr"):
            raise InputError(f"{where}: `scale` must be 'half_lr' or absent; got {self.scale!r}.")
        object.__setattr__(self, "experiments", tuple(self.experiments))
        object.__setattr__(self, "controls", tuple(self.controls))


@dataclass(frozen=True)
class ClaimRow:
    """One row of the claims table (all numbers unrounded; None when undefined)."""

    claim_id: str
    family: str
    claim: str
    quantity: str
    experiment: str | None
    unit: str | None
    kind: str
    null: float
    margin: float | None
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    se: float | None
    df: float | None
    n_runs: int | None
    p_value: float | None
    p_holm: float | None
    verdict: str
    verdict_text: str
    note: str | None = None
    #: training losses of the two sides of a flatness comparison (matched-loss check), else None
    loss_a: float | None = None
    loss_b: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# ============================================================================ helpers


#: Method, lr, batch size and drop probability of a group label (its one parser, beside the
#: builder of run names: :func:`varprinciple.run_json.parse_run_name`).
label_fields = parse_run_name


def _num(x) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _label(side: Any) -> str | None:
    if isinstance(side, Mapping):
        lab = side.get("label")
        if lab is None and isinstance(side.get("group"), Mapping):
            lab = side["group"].get("group")
        return None if lab is None else str(lab)
    return None if side is None else str(side)


def _methods_of(results: Mapping) -> dict[str, str]:
    """group label -> training method, from the relations (label prefix as fallback)."""
    out = {}
    for r in results.get("relations") or []:
        if isinstance(r, Mapping) and r.get("group") is not None and r.get("method") is not None:
            out[str(r["group"])] = str(r["method"])
    return out


def _method(label: str | None, methods: Mapping[str, str]) -> str | None:
    if label is None:
        return None
    return methods.get(label) or label_fields(label)["method"]


def _in(value, allowed) -> bool:
    if allowed is None:
        return True
    allowed = [allowed] if isinstance(allowed, str) else list(allowed)
    return value in allowed


def _group_label(row: Mapping) -> str | None:
    lab = row.get("group_label")
    if lab is None:
        g = row.get("group")
        lab = g.get("group") if isinstance(g, Mapping) else g
    return None if lab is None else str(lab)


def _stat(est, se, df, ci_low, ci_high, n_runs, conf) -> tuple:
    """(estimate, se, df, ci_low, ci_high): the row's own se/df; only a row without them
    (the flatness table's) is read as a t interval over its n_runs with df = n_runs − 1.

    A row whose interval the statistics withheld (null CI: refused, with its reason in the
    row's note) keeps no interval here either: its se is dropped, so it gets no p and no
    verdict, instead of an interval rebuilt from se/df around the refusal.
    """
    if se is None and df is None and n_runs is not None and n_runs >= 2 and ci_low is not None \
            and ci_high is not None:
        df = float(n_runs - 1)
        se = (ci_high - ci_low) / (2 * sps.t.ppf(0.5 + conf / 2, df))
    if ci_low is None or ci_high is None:
        se = None
    return est, se, df, ci_low, ci_high


def _rows_for(spec: ClaimSpec, name: str, results: Mapping, conf: float) -> list[dict]:
    sel = dict(spec.select)
    methods = _methods_of(results)
    out = []
    for row in results.get(spec.table) or []:
        if not isinstance(row, Mapping):
            continue
        losses = (None, None)
        if "block" in sel:
            if row.get("block") is None or (sel["block"] != "*" and row.get("block") != sel["block"]):
                continue
        elif row.get("block") is not None:
            continue  # whole-network rows unless a block is selected
        if "quantity" in sel and row.get("quantity") != sel["quantity"]:
            continue
        sign, unit = 1.0, None
        if spec.table == "comparisons":
            la, lb = _label(row.get("group_a")), _label(row.get("group_b"))
            sa = (row.get("group_a") or {}).get("source") if isinstance(row.get("group_a"), Mapping) else None
            sb = (row.get("group_b") or {}).get("source") if isinstance(row.get("group_b"), Mapping) else None
            ma, mb = _method(la, methods), _method(lb, methods)

            def match(ma, mb, sa, sb, la, lb):
                return (_in(ma, sel.get("methods_a")) and _in(mb, sel.get("methods_b"))
                        and _in(sa, sel.get("source_a")) and _in(sb, sel.get("source_b"))
                        and (not sel.get("same_group") or la == lb))
            if match(ma, mb, sa, sb, la, lb):
                sign = 1.0
            elif match(mb, ma, sb, sa, lb, la):
                sign, la, lb, sa, sb = -1.0, lb, la, sb, sa
            else:
                continue
            if la == lb:
                unit = f"{la}: {sa} − {sb}"
            elif sa or sb:
                unit = f"{la}:{sa} − {lb}:{sb}"
            else:
                unit = f"{la} − {lb}"
            est = _num(row.get("difference"))
            lo, hi = _num(row.get("ci_low")), _num(row.get("ci_high"))
            if est is not None:
                est = sign * est
            if lo is not None and hi is not None and sign < 0:
                lo, hi = -hi, -lo
            n = None
            na, nb = row.get("n_a"), row.get("n_b")
            if isinstance(na, int) and isinstance(nb, int):
                n = min(na, nb) if row.get("paired") else na + nb
            est, se, df, lo, hi = _stat(est, _num(row.get("se")), _num(row.get("df")), lo, hi, None, conf)
            losses = (_num(row.get("loss_a")), _num(row.get("loss_b")))
            if sign < 0:
                losses = losses[::-1]
        else:
            lab = _group_label(row)
            if not _in(_method(lab, methods), sel.get("methods")) or not _in(row.get("source"), sel.get("source")):
                continue
            unit = lab if row.get("source") is None else f"{lab}:{row.get('source')}"
            if row.get("block") is not None:
                unit += f" [{row['block']}]"
            est = _num(row.get(CLAIM_TABLES[spec.table]))
            n = row.get("n_runs") if isinstance(row.get("n_runs"), int) else None
            est, se, df, lo, hi = _stat(est, _num(row.get("se")), _num(row.get("df")),
                                        _num(row.get("ci_low")), _num(row.get("ci_high")), n, conf)
            if spec.scale == "half_lr":
                lr = label_fields(lab or "")["lr"]
                if lr is None:
                    continue
                f = lr / 2
                est, se = (None if est is None else est * f), (None if se is None else se * f)
                lo, hi = (None if lo is None else lo * f), (None if hi is None else hi * f)
                unit += f" (×lr/2 = {f:g})"
        # every caveat of the row travels with it: matched-loss notes of flatness comparisons
        # (stats.matched), the analysis' own `note`, and any other `*_note` field
        notes = [str(row[k]) for k in ("loss_note", "note") if row.get(k)]
        notes += [str(v) for k, v in row.items() if k.endswith("_note") and k != "loss_note" and v]
        out.append({"experiment": name, "unit": unit, "estimate": est, "se": se, "df": df, "ci_low": lo,
                    "ci_high": hi, "n_runs": n, "note": "; ".join(notes) or None, "losses": losses})
    return out


def _p_value(kind: ClaimKind, est, se, df, null, margin, alpha) -> float | None:
    if est is None or se is None or df is None or se <= 0 or df <= 0:
        return None
    if kind is ClaimKind.GREATER:
        return float(sps.t.sf((est - null) / se, df))
    if kind is ClaimKind.LESS:
        return float(sps.t.cdf((est - null) / se, df))
    p = tost_from(est - null, se, df, margin=margin, alpha=alpha).p_value
    return float(p) if math.isfinite(p) else None


def verdict_of(kind: ClaimKind | str, *, null: float, p_holm: float | None, ci_low: float | None,
               ci_high: float | None, alpha: float, margin: float | None = None) -> Verdict:
    """The verdict of one claims-table row (rules in the module docstring).

    Examples
    --------
    >>> verdict_of("greater", null=0, p_holm=0.001, ci_low=0.5, ci_high=1.2, alpha=0.05).value
    'supported'
    >>> verdict_of("greater", null=0, p_holm=0.9, ci_low=-0.6, ci_high=-0.1, alpha=0.05).value
    'not supported'
    >>> verdict_of("equivalent", null=0, p_holm=0.4, ci_low=-0.5, ci_high=0.6, alpha=0.05, margin=0.3).value
    'inconclusive at this power'
    >>> verdict_of("equivalent", null=0, p_holm=0.9, ci_low=-0.52, ci_high=-0.33, alpha=0.05, margin=0.3).value
    'different'
    """
    kind = ClaimKind(kind)
    if p_holm is None or ci_low is None or ci_high is None:
        return Verdict.NOT_EVALUATED
    if kind is ClaimKind.EQUIVALENT:
        if p_holm < alpha:
            return Verdict.EQUIVALENT
        if ci_low > null + margin or ci_high < null - margin:
            return Verdict.DIFFERENT
        return Verdict.INCONCLUSIVE
    if p_holm < alpha:
        return Verdict.SUPPORTED
    wrong_side = ci_high <= null if kind is ClaimKind.GREATER else ci_low >= null
    return Verdict.NOT_SUPPORTED if wrong_side else Verdict.INCONCLUSIVE


def verdict_text(v: Verdict | str, margin: float | None) -> str:
    """The verdict in words (``equivalent within ±0.3``, ``different (outside ±0.3)``)."""
    v = Verdict(v)
    if v is Verdict.EQUIVALENT:
        return f"equivalent within ±{margin:g}"
    if v is Verdict.DIFFERENT:
        return f"different (outside ±{margin:g})"
    return v.value


def claims_table(results: Mapping[str, Mapping], claims: Sequence[ClaimSpec], *, alpha: float = ALPHA,
                 confidence: float = CONFIDENCE) -> list[ClaimRow]:
    """The claims table from results JSONs (one per experiment).

    Parameters
    ----------
    results : mapping
        Experiment name -> results dict (JSON output v1 of ``varprinciple test``).
    claims : sequence of ClaimSpec
    alpha, confidence : float

    Returns
    -------
    list of ClaimRow
        In the order of ``claims``, then experiments, then results rows.

    Examples
    --------
    >>> res = {"digits": {"relations": [], "groups": [
    ...     {"group_label": "sgd-lr0.1-bs32", "source": "sgd", "slope": 1.0, "se": 0.05, "df": 5,
    ...      "ci_low": 0.87, "ci_high": 1.13, "n_runs": 6}]}}
    >>> spec = ClaimSpec("b_sgd", "b", "SGD noise variance grows with curvature", "b", "groups",
    ...                  "greater", select={"source": "sgd", "methods": ["sgd"]})
    >>> row = claims_table(res, [spec])[0]
    >>> row.verdict, row.unit
    ('supported', 'sgd-lr0.1-bs32:sgd')
    """
    if not (0 < alpha < 0.5):
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    if not (0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence!r}.")
    pending: list[dict] = []
    for spec in claims:
        names = spec.experiments or tuple(results)
        found = []
        for name in names:
            if name in results:
                found += _rows_for(spec, name, results[name], confidence)
        if not found:
            missing = [n for n in names if n not in results]
            note = spec.pending or ("no results row matched" + (f" (no results for {', '.join(missing)})"
                                                                if missing else ""))
            pending.append({"spec": spec, "row": None, "note": note})
        for r in found:
            r["p"] = _p_value(spec.kind, r["estimate"], r["se"], r["df"], spec.null, spec.margin, alpha)
            pending.append({"spec": spec, "row": r, "note": None})
    fam: dict[str, list[int]] = {}
    for i, item in enumerate(pending):
        if item["row"] is not None:
            fam.setdefault(item["spec"].family, []).append(i)
    adjusted: dict[int, float] = {}
    for idx in fam.values():
        ps = [pending[i]["row"]["p"] if pending[i]["row"]["p"] is not None else math.nan for i in idx]
        for i, pa in zip(idx, holm(ps).tolist()):
            adjusted[i] = pa if math.isfinite(pa) else None
    out = []
    for i, item in enumerate(pending):
        s, r = item["spec"], item["row"]
        if r is None:
            out.append(ClaimRow(s.id, s.family, s.text, s.quantity, None, None, s.kind.value, s.null, s.margin,
                                None, None, None, None, None, None, None, None, Verdict.NOT_EVALUATED.value,
                                Verdict.NOT_EVALUATED.value, item["note"]))
            continue
        ph = adjusted.get(i)
        v = verdict_of(s.kind, null=s.null, p_holm=ph, ci_low=r["ci_low"], ci_high=r["ci_high"], alpha=alpha,
                       margin=s.margin)
        note = r["note"]
        if v is Verdict.NOT_EVALUATED:
            note = "; ".join(x for x in (note, "no interval or standard error (fewer than 2 runs, or refused)") if x)
        out.append(ClaimRow(s.id, s.family, s.text, s.quantity, r["experiment"], r["unit"], s.kind.value, s.null,
                            s.margin, r["estimate"], r["ci_low"], r["ci_high"], r["se"], r["df"], r["n_runs"],
                            r["p"], ph, v.value, verdict_text(v, s.margin), note, *r["losses"]))
    return out


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    """The claims table as a DataFrame (one row per :class:`ClaimRow`)."""
    cols = list(ClaimRow.__dataclass_fields__)
    return pd.DataFrame([r.to_dict() for r in rows], columns=cols)
