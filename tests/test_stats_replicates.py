"""No pseudo-replication: re-probes of one network, copies and duplicated rows count once.

The calibration check uses its own generator (numpy only, not varprinciple.simulate): each
replicate study has N networks of one training procedure, network j with exponent
b_j ~ N(b, tau^2) and its own spectrum, each probed R times with fresh Gaussian noise draws
(same seed, same eigen table). Run as a script for the numbers in docs/statistics.md:

    python tests/test_stats_replicates.py --replicates 4000
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from varprinciple.errors import LogValidationError
from varprinciple.io import LogSet, NoiseBlock, RunLog, write_run
from varprinciple.stats import analyze
from varprinciple.stats.replicates import EIGEN_RTOL, find_networks, network_values, training_seed


def _block(lam, slope, K, rng, step=0, source="sgd", intercept=-3.0):
    k = len(lam)
    x = rng.standard_normal((K, k)) * np.exp(0.5 * (intercept + slope * np.log(lam)))
    return NoiseBlock(step, source, None, x, np.array(["hessian"] * k, dtype=object), np.arange(k),
                      lam.astype(float), np.full(k, np.nan), np.arange(K), x.var(axis=0, ddof=1))


def reprobe_study(rng, *, n_networks=3, reprobes=2, b=1.0, tau=0.2, k=10, K=50, method="sgd",
                  fingerprint=False) -> LogSet:
    """In-memory log set: n_networks networks, each probed ``reprobes`` times."""
    runs = []
    for j in range(n_networks):
        lam = np.geomspace(10.0, 0.1, k) * np.exp(0.3 * rng.standard_normal(k))
        lam = np.sort(lam)[::-1]
        b_j = b + tau * rng.standard_normal()
        for r in range(reprobes):
            rid = f"{method}-s{j}-p{r}"
            meta = {"schema_version": 1, "run_id": rid, "method": method, "seed": j}
            if fingerprint:  # a checkpoint fingerprint instead of a recorded seed
                meta = {"schema_version": 1, "run_id": rid, "method": method, "checkpoint_fingerprint": f"h{j}"}
            runs.append(RunLog(Path(rid), meta, None, None, blocks=[_block(lam, b_j, K, rng)], fingerprint=rid))
    runs.sort(key=lambda x: x.run_id)
    return LogSet(Path("<memory>"), runs)


# ------------------------------------------------------------------ unit tests of the rules


def test_three_networks_probed_twice_count_three():
    ls = reprobe_study(np.random.default_rng(1))
    res = analyze(ls, resamples=0)
    g = res.groups.iloc[0]
    assert g["n_runs"] == 3 and g["df"] == 2 and g["n_runs_total"] == 6 and g["n_networks"] == 3
    # the group slope is the mean over networks of the mean of each network's re-probes
    rel = res.relations.set_index("run_id")["slope"]
    per_net = [(rel[f"sgd-s{j}-p0"] + rel[f"sgd-s{j}-p1"]) / 2 for j in range(3)]
    assert g["slope"] == pytest.approx(np.mean(per_net), rel=1e-12)
    assert g["ci_high"] - g["slope"] == pytest.approx(
        stats.t.ppf(0.975, 2) * np.std(per_net, ddof=1) / math.sqrt(3), rel=1e-10)
    assert any("runs sgd-s0-p0, sgd-s0-p1 are one network (same seed 0 and eigenvalues)" in n for n in res.notes)
    assert set(res.relations["network"]) == {"sgd-s0-p0", "sgd-s1-p0", "sgd-s2-p0"}
    assert "n_runs and df count networks" in res.settings["replicates"]


def test_checkpoint_fingerprint_merges_without_a_seed():
    ls = reprobe_study(np.random.default_rng(2), fingerprint=True)
    res = analyze(ls, resamples=0)
    assert res.groups.iloc[0]["n_runs"] == 3
    assert any("same checkpoint_fingerprint" in n for n in res.notes)


def test_rules_and_what_is_never_merged():
    rng = np.random.default_rng(3)
    lam = np.geomspace(5, 0.5, 6)

    def run(rid, method="sgd", lam_=lam, **meta):
        return RunLog(Path(rid), {"run_id": rid, "method": method, **meta}, None, None,
                      blocks=[_block(lam_, 1.0, 20, rng)], fingerprint=rid)

    runs = [run("a", seed=0), run("b", seed=0), run("c", seed=0, lam_=lam * (1 + 10 * EIGEN_RTOL)),
            run("d", seed=1), run("e", train_seed=1, seed=7), run("f", method="dropout", seed=0),
            run("g", checkpoint_fingerprint={"0": "x"}), run("h", checkpoint_fingerprint={"0": "x", "5": "y"}),
            run("i", seed=0, lam_=lam * (1 + 0.1 * EIGEN_RTOL))]
    labels = ["G"] * 8 + ["other"]
    net = find_networks(runs, labels, identical=[("d", "g")])
    of = net.network_of
    assert of["a"] == of["b"] == "a"           # same seed and eigenvalues
    assert of["c"] == "c"                      # eigenvalues differ by more than EIGEN_RTOL
    assert of["d"] == of["e"] == of["g"] == of["h"] == "d"  # train_seed; identical noise; fingerprint (transitive)
    assert of["f"] == "f"                      # another method is another network
    assert of["i"] == "i"                      # another group is never merged
    assert [ids for ids, _ in net.merged] == [("a", "b"), ("d", "e", "g", "h")]
    reasons = dict(net.merged)[("d", "e", "g", "h")]
    assert "identical noise tables" in reasons and "same checkpoint_fingerprint" in reasons
    assert training_seed({"seed": [1]}) is None


def test_network_values_mean_and_se():
    nets, v, se = network_values(["a", "b", "c", "d"], np.array([1.0, np.nan, 4.0, 6.0]),
                                 {"b": "a", "d": "c"}, ses=np.array([0.3, 0.1, 0.4, 0.3]))
    assert nets == ["a", "c"]
    np.testing.assert_allclose(v, [1.0, 5.0])
    np.testing.assert_allclose(se, [0.3, 0.25])


def _write_run(root, rid, lam, slope, rng, *, seed, step=0, k=None, flat=None):
    k = k or len(lam)
    K = 40
    x = rng.standard_normal((K, k)) * lam[:k] ** (slope / 2)
    noise = pd.DataFrame({"step": step, "source": "sgd", "basis": "hessian", "direction": np.tile(np.arange(k), K),
                          "sample": np.repeat(np.arange(K), k), "value": x.ravel()})
    eig = pd.DataFrame({"step": step, "rank": np.arange(k), "eigenvalue": lam[:k]})
    tables = {"flatness.parquet": pd.DataFrame(flat)} if flat is not None else None
    write_run(root / rid, {"run_id": rid, "method": "sgd", "seed": seed}, eigen=eig, noise=noise, tables=tables)


def test_identical_copies_count_once_on_disk(tmp_path):
    rng = np.random.default_rng(4)
    lam = np.geomspace(8, 0.2, 6)
    for i in range(3):
        _write_run(tmp_path, f"r{i}", lam * (1 + 0.1 * i), 1.0, rng, seed=i,
                   flat={"step": [0], "quantity": ["lambda_max"], "estimate": [8.0 + i]})
    import shutil
    shutil.copytree(tmp_path / "r0", tmp_path / "r0copy")
    (tmp_path / "r0copy" / "run.json").write_text('{"schema_version": 1, "run_id": "r0copy", "method": "sgd"}')
    with pytest.warns(Warning, match="identical noise tables"):
        res = analyze(tmp_path, resamples=0)
    assert res.groups.iloc[0]["n_runs"] == 3 and res.groups.iloc[0]["n_runs_total"] == 4
    fl = res.flatness.query("quantity == 'lambda_max'").iloc[0]
    assert fl["n_runs"] == 3 and fl["estimate"] == pytest.approx(9.0)


def test_duplicate_flatness_rows_refused_with_file_and_key(tmp_path):
    rng = np.random.default_rng(5)
    lam = np.geomspace(8, 0.2, 6)
    _write_run(tmp_path, "r0", lam, 1.0, rng, seed=0)
    _write_run(tmp_path, "r1", lam * 1.1, 1.0, rng, seed=1)
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"step": [0, 0], "quantity": ["lambda_max"] * 2, "estimate": [3.0, 3.5]}),
                   tmp_path / "r1" / "flatness.parquet")
    with pytest.raises(LogValidationError, match=r"run 'r1': flatness.parquet: columns \('step', 'quantity'\): "
                                                 r"1 duplicate row"):
        analyze(tmp_path, resamples=0)


def test_pooled_designs_that_differ_get_a_note(tmp_path):
    rng = np.random.default_rng(6)
    lam = np.geomspace(8, 0.2, 8)
    _write_run(tmp_path, "r0", lam, 1.0, rng, seed=0, step=10)
    _write_run(tmp_path, "r1", lam * 1.1, 1.0, rng, seed=1, step=20)
    _write_run(tmp_path, "r2", lam * 1.2, 1.0, rng, seed=2, step=20, k=5)
    res = analyze(tmp_path, resamples=0)
    text = " ".join(res.notes)
    assert "group sgd:sgd pools runs analysed at different steps (10, 20)" in text
    assert "group sgd:sgd pools runs with different numbers of probed Hessian directions (5, 8)" in text


# ------------------------------------------------------------------ calibration


def coverage(replicates: int, seed: int, *, n_networks=3, reprobes=2, tau=0.2, b=1.0):
    """Coverage of the group's 95% CI for the procedure's mean exponent b, and of the naive
    interval that counts every re-probe as a replicate (the defect this fixes)."""
    rng = np.random.default_rng(seed)
    hit = naive = 0
    for _ in range(replicates):
        res = analyze(reprobe_study(rng, n_networks=n_networks, reprobes=reprobes, tau=tau, b=b), resamples=0)
        g = res.groups.iloc[0]
        hit += g["ci_low"] <= b <= g["ci_high"]
        s = res.relations["slope"].to_numpy()
        h = stats.t.ppf(0.975, len(s) - 1) * s.std(ddof=1) / math.sqrt(len(s))
        naive += abs(s.mean() - b) <= h
    return hit / replicates, naive / replicates


@pytest.mark.slow
def test_group_ci_covers_with_reprobed_networks():
    R = 300
    cov, naive = coverage(R, 2026)
    se = math.sqrt(0.95 * 0.05 / R)
    assert abs(cov - 0.95) <= 3 * se, (cov, naive)
    assert naive < 0.90  # counting re-probes as runs undercovers (≈ 0.80)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    import logging
    logging.getLogger("varprinciple").setLevel(logging.ERROR)  # one merge warning per replicate otherwise
    for nn, rp in ((3, 2), (5, 2), (3, 3)):
        c, nv = coverage(a.replicates, a.seed, n_networks=nn, reprobes=rp)
        se = math.sqrt(c * (1 - c) / a.replicates)
        print(f"{nn} networks x {rp} probes, tau 0.2, k 10, K 50: coverage {c:.3f} (MC SE {se:.3f}); "
              f"naive (re-probes as runs) {nv:.3f}; {a.replicates} replicates")


def test_fingerprints_must_agree_at_every_common_step():
    from varprinciple.stats.replicates import _same_checkpoint
    assert _same_checkpoint({"20": "x"}, {"10": "w", "20": "x"})          # a re-probe of the last checkpoint
    assert not _same_checkpoint({"0": "i", "20": "x"}, {"0": "i", "20": "y"})  # one init, trained apart
    assert not _same_checkpoint({"0": "i"}, {"20": "i"}) and _same_checkpoint("a", "a")
