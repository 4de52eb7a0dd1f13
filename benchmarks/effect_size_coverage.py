"""Coverage of the comparison effect sizes, and the alternatives that were measured and rejected.

    PYTHONPATH=. python benchmarks/effect_size_coverage.py --replicates 2000

Own generator (numpy), one value per network drawn from normal (or Student-t with 3 df,
"heavy") distributions; two groups of n networks; 95% intervals. Prints the coverage of

* Hedges' g (independent) and d_z (paired) with the noncentral-t interval (the shipped ones),
* P(A > B) = Φ(δ/√2) with the mapped interval (shipped), under normal and heavy-tailed data,
* two distribution-free intervals for P(A > B) that were considered: Brunner–Munzel's Wald
  interval (t, Satterthwaite df; undefined under complete separation — counted as a miss)
  and Newcombe's (2006) score interval, method 5,

and the familywise rate of a false "equivalent" among 4 groups spaced one margin apart
(per-comparison TOST vs Holm-adjusted TOST).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import optimize, stats

from varprinciple.stats.comparisons import Unit, comparison_rows
from varprinciple.stats.effect_size import prob_superiority, standardized_difference


def _bm_wald(a, b, conf=0.95):
    na, nb = a.size, b.size
    r = stats.rankdata(np.concatenate([a, b]))
    ra, rb = r[:na], r[na:]
    est = (ra.mean() - (na + 1) / 2) / nb
    sa = np.sum((ra - stats.rankdata(a) - ra.mean() + (na + 1) / 2) ** 2) / (na - 1)
    sb = np.sum((rb - stats.rankdata(b) - rb.mean() + (nb + 1) / 2) ** 2) / (nb - 1)
    if not (sa > 0 or sb > 0):
        return None
    se = math.sqrt(sa / (na * nb * nb) + sb / (nb * na * na))
    df = (na * sa + nb * sb) ** 2 / ((na * sa) ** 2 / (na - 1) + (nb * sb) ** 2 / (nb - 1))
    t = stats.t.ppf(0.5 + conf / 2, df)
    return est - t * se, est + t * se


def _newcombe5(a, b, conf=0.95):
    m, n = a.size, b.size
    r = stats.rankdata(np.concatenate([a, b]))
    est = (r[:m].mean() - (m + 1) / 2) / n
    z2 = stats.norm.ppf(0.5 + conf / 2) ** 2
    half = (m + n) / 2 - 1

    def f(t):
        v = t * (1 - t) / (m * n) * (1 + half * ((1 - t) / (2 - t) + t / (1 + t)))
        return (est - t) ** 2 - z2 * v

    lo = 0.0 if est <= 0 or f(0.0) <= 0 else optimize.brentq(f, 0.0, est)
    hi = 1.0 if est >= 1 or f(1.0) <= 0 else optimize.brentq(f, est, 1.0)
    return lo, hi


def coverage(R, n, shift, heavy, rng):
    draw = (lambda size: stats.t.rvs(3, size=size, random_state=rng) / math.sqrt(3)) if heavy else \
        (lambda size: rng.standard_normal(size))
    # truth of P(A > B) for a shift of the same law: by Monte Carlo for t3, closed form for normal
    if heavy:
        truth = float(np.mean(draw(2_000_000) + shift > draw(2_000_000)))
        truth_p = float(np.mean(draw(2_000_000) + shift > 0))
    else:
        truth = stats.norm.cdf(shift / math.sqrt(2))
        truth_p = stats.norm.cdf(shift)
    hit = {"g": 0, "ps_normal": 0, "ps_bm": 0, "ps_newcombe": 0, "dz": 0, "ps_paired": 0}
    for _ in range(R):
        a, b = draw(n) + shift, draw(n)
        es = standardized_difference(a, b)
        hit["g"] += es.ci_low <= shift <= es.ci_high if not heavy else 0
        ps = prob_superiority(a, b)
        hit["ps_normal"] += ps.ci_low <= truth <= ps.ci_high
        bm = _bm_wald(a, b)
        hit["ps_bm"] += bm is not None and bm[0] <= truth <= bm[1]
        nc = _newcombe5(a, b)
        hit["ps_newcombe"] += nc[0] <= truth <= nc[1]
        d = draw(n) + shift  # paired differences
        dz = standardized_difference(d, np.zeros(n), paired=True)
        hit["dz"] += dz.ci_low <= shift <= dz.ci_high if not heavy else 0
        pp = prob_superiority(d, np.zeros(n), paired=True)
        hit["ps_paired"] += pp.ci_low <= truth_p <= pp.ci_high
    return {k: v / R for k, v in hit.items()}


def tost_fwer(R, rng, n=5, margin=0.3, sd=0.05):
    raw = adj = 0
    for _ in range(R):
        units = [Unit(f"g{i}", {}, "sgd", None, {f"g{i}-{r}": v for r, v in
                                               enumerate(margin * i + sd * rng.standard_normal(n))})
                 for i in range(4)]
        rows = comparison_rows({"slope": units}, None, conf=0.95, alpha=0.05, margin=margin, step_label=0, notes=[])
        raw += any(r["equivalent"] for r in rows)
        adj += any(r["equivalent_adjusted"] for r in rows)
    return raw / R, adj / R


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    R = a.replicates
    print(f"{R} replicates per row; MC SE of a coverage near 0.95: {math.sqrt(0.95 * 0.05 / R):.3f}")
    print("| law | n per group | shift | g | d_z | P(A>B) normal model | paired P(D>0) | Brunner–Munzel | Newcombe 5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for heavy in (False, True):
        for n in (3, 5, 10):
            for shift in (0.0, 1.0, 2.0):
                c = coverage(R, n, shift, heavy, rng)
                g = "—" if heavy else f"{c['g']:.3f}"
                dz = "—" if heavy else f"{c['dz']:.3f}"
                print(f"| {'t3' if heavy else 'normal'} | {n} | {shift} | {g} | {dz} | {c['ps_normal']:.3f} | "
                      f"{c['ps_paired']:.3f} | {c['ps_bm']:.3f} | {c['ps_newcombe']:.3f} |")
    raw, adj = tost_fwer(R, rng)
    se = math.sqrt(0.05 * 0.95 / R)
    print(f"TOST, 4 groups one margin apart (n 5, sd 0.05, margin 0.3): P(any false 'equivalent') "
          f"per comparison {raw:.3f}, Holm-adjusted {adj:.3f} (MC SE near 0.05: {se:.3f})")


if __name__ == "__main__":
    main()
