"""Issue 2's "Done when": `varprinciple test` on log sets written by an INDEPENDENT generator.

The generator below does not use :mod:`varprinciple.simulate` nor :mod:`varprinciple.io`:
it writes schema-v1 files with pyarrow and ``json`` directly, from a different model:

* a random orthonormal basis ``V`` of a D-dimensional parameter space (QR of a Gaussian
  matrix); the first k columns are the probed Hessian eigenvectors;
* eigenvalues drawn log-uniformly over two to three decades (not a power-law spectrum),
  optionally with non-positive eigenvalues and a tiny positive one below its residual, whose
  noise variances are OFF the power law (they must be excluded, or the fit is biased);
* noise generated in all D dimensions, ``xi = V (S^(1/2) L w)``, with an AR(1) correlation
  ``L L^T`` across the probed directions and a bulk of small variances elsewhere, then
  PROJECTED on the logged directions (Hessian ones and random unit vectors);
* latent draws ``w``: Gaussian; multivariate Student-t via a chi-square scale SHARED by all
  D coordinates of a draw (heavy tails, nu = 5); dropout-like masked noise
  ``w = m * g`` with Bernoulli keep masks m and Gaussian unit features g of non-zero mean
  (a non-Gaussian draw distribution with a non-zero mean), standardised;
* direction scatter ``log sigma_i^2 = log c + b log lambda_i + tau * N(0, 1)``.

Thresholds are the issue's: per-run CI coverage in [0.91, 0.99], null rejection <= 0.085,
and stated power for weak effects; group comparisons with 8 runs per method and run-to-run
spread. With n replicate runs the Monte Carlo SD of a rate p is sqrt(p (1 - p) / n); the
bounds below are at least 2.5 of those SDs away from the nominal values (numbers in each
test), so a calibrated analysis fails them with probability < 1 % and the seeds are fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

CONFIDENCE = 0.95
ALPHA = 0.05


# ================================================================ the independent generator


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str  # "gauss" | "mvt" | "masked"
    scatter: float  # tau, natural-log units
    nonpositive: int = 0  # eigenvalues <= 0 (plus one tiny positive below its residual if > 0)
    nu: float = 5.0
    keep: float = 0.3
    k: int = 16  # Hessian directions logged
    n_random: int = 4
    D: int = 40  # ambient dimension
    K: int = 200  # draws
    ar: float = 0.5  # AR(1) correlation across probed directions (by rank)
    decades: float = 2.5


def _basis(D: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((D, D)))
    return q * np.sign(np.diag(r))


def _latent(sc: Scenario, K: int, D: int, rng: np.random.Generator) -> np.ndarray:
    """K x D standardised latent draws (identity covariance) of the scenario's family."""
    if sc.family == "gauss":
        return rng.standard_normal((K, D))
    if sc.family == "mvt":  # multivariate t: one chi-square scale per draw, shared by all coordinates
        w = rng.chisquare(sc.nu, size=(K, 1))
        return rng.standard_normal((K, D)) * np.sqrt((sc.nu - 2.0) / w)
    # masked: unit masks m ~ Bernoulli(keep) times Gaussian features g ~ N(1, 0.5^2)
    m = rng.random((K, D)) < sc.keep
    g = rng.normal(1.0, 0.5, size=(K, D))
    var = sc.keep * (1.0 + 0.25) - sc.keep**2  # Var(m g) = keep E g^2 - (keep E g)^2
    return (m * g) / np.sqrt(var)  # mean keep / sqrt(var) != 0, covariance I


def _ar1_chol(k: int, D: int, phi: float) -> np.ndarray:
    idx = np.arange(k)
    R = np.eye(D)
    R[:k, :k] = phi ** np.abs(idx[:, None] - idx[None, :])
    return np.linalg.cholesky(R)


def write_foreign_run(run_dir: Path, run_id: str, method: str, b: float, sc: Scenario,
                      rng: np.random.Generator, *, source: str = "sgd", extra: dict | None = None) -> None:
    """Write one schema-v1 run with pyarrow + json only; the true exponent is ``b``."""
    k, D, K = sc.k, sc.D, sc.K
    n_bad = sc.nonpositive
    lmax = float(np.exp(rng.uniform(0.0, 3.0)))
    n_pos = k - n_bad - (1 if n_bad else 0)
    lam_pos = np.sort(lmax * 10.0 ** rng.uniform(-sc.decades, 0.0, size=n_pos))[::-1]
    lam_pos[0] = lmax
    lam = lam_pos
    on_law = np.ones(k, dtype=bool)
    if n_bad:
        tiny = np.array([lmax * 1e-9])  # positive but below its residual
        bad = np.concatenate([[0.0], -lmax * 10.0 ** rng.uniform(-3, -1, size=n_bad - 1)])
        lam = np.concatenate([lam_pos, tiny, np.sort(bad)[::-1]])
        on_law[n_pos:] = False
    resid = np.full(k, lmax * 1e-7)
    logc = rng.uniform(-6.0, -2.0)
    logvar = np.empty(k)
    logvar[on_law] = logc + b * np.log(lam[on_law]) + sc.scatter * rng.standard_normal(on_law.sum())
    # off-law directions: variance comparable to the sharpest ones (would pull b down if fitted)
    logvar[~on_law] = logvar[on_law].max() + rng.normal(0.0, 0.5, size=(~on_law).sum())
    bulk = np.exp(logvar.min() - 2.0 + rng.uniform(-1, 1, size=D - k))
    sd = np.sqrt(np.concatenate([np.exp(logvar), bulk]))
    V = _basis(D, rng)
    L = _ar1_chol(k, D, sc.ar)
    w = _latent(sc, K, D, rng)
    y = (w @ L.T) * sd  # eigen-coordinates
    xi = y @ V.T  # full-dimensional noise draws
    U = rng.standard_normal((D, sc.n_random))
    U /= np.linalg.norm(U, axis=0)
    proj = np.hstack([xi @ V[:, :k], xi @ U])  # K x (k + n_random)
    d = proj.shape[1]
    noise = pa.table({
        "step": pa.array(np.full(K * d, 100, dtype=np.int32)),  # narrower int: a lossless upcast
        "source": pa.array([source] * (K * d), type=pa.large_string()),
        "basis": pa.array((["hessian"] * k + ["random"] * sc.n_random) * K),
        "direction": pa.array(np.tile(np.concatenate([np.arange(k), np.arange(sc.n_random)]), K)),
        "sample": pa.array(np.repeat(np.arange(K), d)),
        "value": pa.array(proj.ravel()),
    })
    eigen = pa.table({"step": pa.array(np.full(k, 100, dtype=np.int64)), "rank": pa.array(np.arange(k)),
                      "eigenvalue": pa.array(lam), "residual": pa.array(resid)})
    run_dir.mkdir(parents=True)
    pq.write_table(noise, run_dir / "noise.parquet")
    pq.write_table(eigen, run_dir / "eigen.parquet")
    meta = {"schema_version": 1, "run_id": run_id, "method": method, "seed": int(rng.integers(1 << 31)),
            "dataset": "foreign", "model": f"independent-{sc.name}", **(extra or {})}
    (run_dir / "run.json").write_text(json.dumps(meta))


# ================================================================ running the analysis


def _analyze(root: Path, **kw):
    stats = pytest.importorskip("varprinciple.stats")
    if not hasattr(stats, "analyze"):
        pytest.skip("varprinciple.stats.analyze not available yet")
    return stats.analyze(root, confidence=CONFIDENCE, alpha=ALPHA, seed=0, **kw)


def _rate_bounds(p: float, n: int, z: float = 2.5) -> float:
    return z * np.sqrt(p * (1 - p) / n)


SCENARIOS = [
    # name, family, scatter, nonpositive; weak effect b_weak stated per scenario
    (Scenario("heavy_tailed", "mvt", scatter=0.15, nu=5.0), 0.15),
    (Scenario("masked", "masked", scatter=0.15, keep=0.3), 0.15),
    (Scenario("scatter", "gauss", scatter=0.6), 0.3),
    (Scenario("nonpositive", "mvt", scatter=0.2, nonpositive=4, nu=8.0), 0.2),
]
N_NULL = 300
N_WEAK = 200


@pytest.mark.parametrize("sc, b_weak", SCENARIOS, ids=[s.name for s, _ in SCENARIOS])
def test_per_run_calibration_on_foreign_logs(tmp_path, sc, b_weak):
    """Coverage of the true b in [0.91, 0.99]; null rejection <= 0.085; power >= 0.8 at b_weak.

    MC SDs: coverage over 500 runs 0.0097 at 0.95 (bounds >= 4 SD away); null rejection over
    300 runs 0.0126 at 0.05 (0.085 is 2.8 SD above); power over 200 runs <= 0.028 at 0.8.
    """
    rng = np.random.default_rng([2026, [s.name for s, _ in SCENARIOS].index(sc.name)])
    truth = {}
    for i in range(N_NULL + N_WEAK):
        b = 0.0 if i < N_NULL else b_weak
        rid = f"{'null' if i < N_NULL else 'weak'}-{i:04d}"
        write_foreign_run(tmp_path / rid, rid, "null" if i < N_NULL else "weak", b, sc, rng)
        truth[rid] = b
    res = _analyze(tmp_path)
    rel = res.relations
    rel = rel[(rel["basis"] == "hessian") & (rel["source"] == "sgd")].set_index("run_id")
    assert len(rel) == N_NULL + N_WEAK
    b_true = rel.index.map(truth).to_numpy(dtype=float)
    cover = ((rel["ci_low"] <= b_true) & (b_true <= rel["ci_high"])).to_numpy()
    null = b_true == 0.0
    reject = (rel["p_value"] < ALPHA).to_numpy()
    coverage, type1, power = cover.mean(), reject[null].mean(), reject[~null].mean()
    summary = (f"{sc.name}: coverage {coverage:.3f} (n={cover.size}), null rejection {type1:.3f} "
               f"(n={null.sum()}), power at b={b_weak} {power:.3f} (n={(~null).sum()}), "
               f"mean width {(rel['ci_high'] - rel['ci_low']).mean():.3f}")
    print(summary)
    if sc.nonpositive:
        # every non-positive / unreliable eigenvalue excluded, none of the good ones
        assert (rel["n_excluded"] == sc.nonpositive + 1).all(), summary
        assert (rel["n_directions"] == sc.k - sc.nonpositive - 1).all(), summary
    assert 0.91 <= coverage <= 0.99, summary
    assert type1 <= 0.085, summary
    assert power >= 0.8, summary  # an interval that always covers would fail here


# ================================================================ dropout vs SGD at group level

N_PER_METHOD = 8
SPREAD = 0.1  # run-to-run SD of the exponent
SGD_SC = Scenario("sgd", "mvt", scatter=0.2, nu=5.0, k=12, n_random=0, K=100, nonpositive=2)
DROP_SC = Scenario("dropout", "masked", scatter=0.2, keep=0.3, k=12, n_random=0, K=100, nonpositive=2)


def _study(root: Path, i: int, mean_sgd: float, mean_drop: float, rng: np.random.Generator) -> None:
    for method, mean_b, sc in (("sgd", mean_sgd, SGD_SC), ("dropout", mean_drop, DROP_SC)):
        for j in range(N_PER_METHOD):
            rid = f"st{i:03d}-{method}-{j}"
            write_foreign_run(root / f"st{i:03d}" / rid, rid, method, mean_b + SPREAD * rng.standard_normal(),
                              sc, rng, source=method, extra={"group": f"st{i:03d}-{method}"})


N_STUDIES_NULL = 250
N_STUDIES_ALT = 100
DELTA = 0.25  # dropout - sgd, in exponent units, for the coverage/power studies


def test_dropout_vs_sgd_comparison_is_calibrated(tmp_path):
    """8 runs per method, run-to-run SD 0.1: type I <= 0.085 under equal means (250 studies,
    MC SD 0.0138, bound 2.5 SD above 0.05); CI coverage of the true difference in [0.91, 0.99]
    over all 350 studies (MC SD 0.0116, bounds >= 3.4 SD away); power at a difference of 0.25
    (about 2.3 run-level SDs of the per-run estimates) stated and checked >= 0.8."""
    rng = np.random.default_rng(8)
    true_diff = {}
    for i in range(N_STUDIES_NULL + N_STUDIES_ALT):
        d = 0.0 if i < N_STUDIES_NULL else DELTA
        _study(tmp_path, i, 0.8, 0.8 + d, rng)
        true_diff[f"st{i:03d}"] = d
    res = _analyze(tmp_path, resamples=0,
                   compare=[f"st{i:03d}-dropout vs st{i:03d}-sgd" for i in range(len(true_diff))])
    comp = res.comparisons
    comp = comp[comp["quantity"] == "slope"]
    labels = comp["label_a"].astype(str)
    study = labels.str.slice(0, 5)
    assert study.nunique() == len(true_diff) == len(comp)
    assert (comp["label_b"].str.slice(0, 5) == study).all() and (~comp["paired"]).all()
    sign = np.where(labels.str.endswith("dropout"), 1.0, -1.0)  # difference = a - b
    d_true = study.map(true_diff).to_numpy(dtype=float) * sign
    cover = ((comp["ci_low"] <= d_true) & (d_true <= comp["ci_high"])).to_numpy()
    null = d_true == 0
    reject = (comp["p_value"] < ALPHA).to_numpy()
    summary = (f"dropout vs sgd: coverage {cover.mean():.3f} (n={cover.size}), type I {reject[null].mean():.3f} "
               f"(n={null.sum()}), power at |diff|={DELTA} {reject[~null].mean():.3f} (n={(~null).sum()})")
    print(summary)
    assert 0.91 <= cover.mean() <= 0.99, summary
    assert reject[null].mean() <= 0.085, summary
    assert reject[~null].mean() >= 0.8, summary


def test_cli_on_foreign_logs_equals_the_api_and_counts_exclusions(tmp_path, capsys):
    """`varprinciple test --json` on foreign logs: same per-run numbers as the API, exclusions
    counted by reason (0 and negative eigenvalues: nonpositive; 1e-9 lambda_max: below the floor)."""
    from varprinciple.cli import main

    sc = SCENARIOS[3][0]
    rng = np.random.default_rng(99)
    for i in range(12):
        write_foreign_run(tmp_path / "logs" / f"r{i:02d}", f"r{i:02d}", "sgd" if i < 6 else "dropout", 0.5, sc, rng)
    out = tmp_path / "res.json"
    assert main(["-q", "test", str(tmp_path / "logs"), "--json", str(out)]) == 0
    assert "Groups" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    api = _analyze(tmp_path / "logs").relations.set_index("run_id")
    assert len(doc["relations"]) == 12
    for r in doc["relations"]:
        a = api.loc[r["run_id"]]
        np.testing.assert_allclose([r["slope"], r["ci_low"], r["ci_high"], r["p_value"]],
                                   [a["slope"], a["ci_low"], a["ci_high"], a["p_value"]], rtol=1e-12)
        assert r["excluded"] == {"nonpositive": sc.nonpositive, "below_floor": 1, "residual": 0}
        assert r["n_directions"] == sc.k - sc.nonpositive - 1
    assert (tmp_path / "res.directions.parquet").exists()


# ================================================================ issue 7: realistic structures, end to end


def test_realistic_logs_end_to_end(tmp_path):
    """Log sets written by tests/_realistic_generator.py (pyarrow + json, its own model): sampling
    errors correlated in blocks along the spectrum, t5 tails, K = 30, three high-leverage outlier
    eigenvalues with a larger scatter, two tiny off-law eigenvalues at 5e-6 lambda_max, 4 random
    directions. The per-run b interval must cover the true b = 1 in [0.95 - 3 SE, 0.99] of 200 runs
    (SE 0.0154), the default floor must exclude the tiny directions, and the variance-ratio
    interval must cover each run's true ratio in [0.93 - 3 SE, 0.99] (SE 0.018)."""
    from _realistic_generator import Design, draws, write_run

    d = Design(K=30, k=22, b=1.0, tails="t5", block_corr=0.5, scatter=0.2, n_outliers=3, outlier_scatter=0.8,
               n_tiny=2, m_random=4, D=300)
    rng = np.random.default_rng(77)
    n_runs = 200
    lam, X, R, truth = draws(d, n_runs, rng)
    for i in range(n_runs):
        write_run(tmp_path / f"r{i:03d}", f"r{i:03d}", "sgd", lam, X[i], R[i], residual=np.full(lam.size, 1e-9),
                  seed=i)
    rel = _analyze(tmp_path, resamples=0).relations.set_index("run_id").sort_index()
    assert len(rel) == n_runs
    assert (rel["n_excluded_below_floor"] == 2).all() and (rel["n_directions"] == 20).all()
    cover = float(((rel["ci_low"] <= 1.0) & (1.0 <= rel["ci_high"])).mean())
    ratio_cover = float(((rel["ratio_ci_low"].to_numpy() <= truth) & (truth <= rel["ratio_ci_high"].to_numpy())).mean())
    summary = f"b coverage {cover:.3f}, mean b {rel['slope'].mean():.3f}, ratio coverage {ratio_cover:.3f}"
    print(summary)
    assert 0.95 - 3 * 0.0154 <= cover <= 0.99, summary
    assert abs(rel["slope"].mean() - 1.0) < 0.05, summary
    assert 0.93 - 3 * 0.018 <= ratio_cover <= 0.99, summary


def test_realistic_generator_has_the_structures_it_claims():
    """The generator itself: block correlation along the spectrum, variances on lambda^b, and the
    ratio estimand tr(C)/D matched by many random directions (large K, so sampling error is small)."""
    from _realistic_generator import Design, draws

    d = Design(K=20000, k=8, b=1.0, block_corr=0.5, n_blocks=2, m_random=400, D=60, decades=2.0)
    lam, X, R, truth = draws(d, 1, np.random.default_rng(3))
    C = np.corrcoef(X[0], rowvar=False)
    np.testing.assert_allclose([C[0, 1], C[4, 5]], 0.5, atol=0.03)  # within a block
    np.testing.assert_allclose([C[0, 7], C[3, 4]], 0.0, atol=0.03)  # across blocks
    v = X[0].var(axis=0, ddof=1)
    np.testing.assert_allclose(np.polyfit(np.log(lam), np.log(v), 1)[0], 1.0, atol=0.03)
    ratio = v.mean() / R[0].var(axis=0, ddof=1).mean()
    np.testing.assert_allclose(ratio, truth[0], rtol=0.15)  # 400 random directions: ~5% sd
