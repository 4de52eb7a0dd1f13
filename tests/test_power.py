"""Tests of varprinciple.stats.power and `varprinciple power`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from statsmodels.stats.power import TTestIndPower, TTestPower

from varprinciple.cli import main
from varprinciple.errors import InputError
from varprinciple.stats.power import PowerResult, power_analysis


def _sxx(n_directions: int, decay: float = 1.0) -> float:
    x = -decay * np.log(np.arange(1, n_directions + 1))
    return float(((x - x.mean()) ** 2).sum())


@pytest.mark.slow
def test_slope_power_matches_closed_form_t_test():
    """Without scatter the per-run estimate has SD sqrt(slope_sd^2 + 2/((K-1) Sxx)) (Gaussian
    noise, uncorrelated projections), so the group test's power is the one-sample t power."""
    K, d, n, sd, eff, R = 400, 20, 5, 0.1, 0.09, 300
    res = power_analysis(effect=eff, n_runs=[n], n_directions=[d], n_samples=[K], replicates=R, slope_sd=sd,
                         scatter=0.0, correlation=0.0, noise="gaussian", rng=np.random.default_rng(1))
    sd_total = np.sqrt(sd**2 + 2.0 / ((K - 1) * _sxx(d)))
    exact = TTestPower().power(effect_size=eff / sd_total, nobs=n, alpha=0.05, alternative="larger")
    got = res.table["power"].iloc[0]
    se = np.sqrt(exact * (1 - exact) / R)
    assert abs(got - exact) < 3 * se, (got, exact, se)
    assert 0.3 < exact < 0.9  # a case where the check has teeth


@pytest.mark.slow
def test_difference_power_matches_two_sample_t_and_holds_alpha_at_zero():
    K, d, n, sd, R = 400, 20, 6, 0.1, 250
    res = power_analysis(effect=0.12, kind="difference", n_runs=[n], n_directions=[d], n_samples=[K],
                         replicates=R, slope_sd=sd, scatter=0.0, correlation=0.0, rng=np.random.default_rng(2))
    sd_total = np.sqrt(sd**2 + 2.0 / ((K - 1) * _sxx(d)))
    exact = TTestIndPower().power(effect_size=0.12 / sd_total, nobs1=n, ratio=1.0, alpha=0.05)
    got = res.table["power"].iloc[0]
    # Welch's df is at most the pooled df: its power is slightly below the pooled t's
    assert exact - 3 * np.sqrt(exact * (1 - exact) / R) - 0.02 < got < exact + 3 * np.sqrt(exact * (1 - exact) / R)
    null = power_analysis(effect=0.0, kind="difference", n_runs=[n], n_directions=[10], n_samples=[50],
                          replicates=R, rng=np.random.default_rng(3))
    assert null.table["power"].iloc[0] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / R)


@pytest.mark.slow
def test_power_grows_with_runs_directions_and_samples():
    res = power_analysis(effect=0.06, n_runs=[2, 4, 8], n_directions=[6, 24], n_samples=[30, 300],
                         replicates=100, slope_sd=0.05, scatter=0.1, rng=np.random.default_rng(4))
    t = res.to_frame().set_index(["n_runs", "n_directions", "n_samples"])["power"]
    se = lambda p1, p2: np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 100)  # noqa: E731
    for d in (6, 24):
        for k in (30, 300):
            p = [t[(r, d, k)] for r in (2, 4, 8)]
            assert all(b >= a - 2.5 * se(a, b) for a, b in zip(p, p[1:])), (d, k, p)
    assert t[(8, 24, 300)] > t[(2, 6, 30)] + 3 * se(t[(8, 24, 300)], t[(2, 6, 30)])
    assert t[(4, 24, 300)] > t[(4, 6, 30)]  # more directions and samples help at fixed runs
    assert (res.table["mc_se"] == np.sqrt(res.table["power"] * (1 - res.table["power"]) / 100)).all()


def test_recommendation_is_the_smallest_design_reaching_the_target():
    res = power_analysis(effect=0.5, n_runs=[2, 3, 6], n_directions=[10], n_samples=[50, 100], replicates=30,
                         target_power=0.9, rng=np.random.default_rng(5))
    reached = res.table[res.table["power"] >= 0.9]
    assert res.recommended is not None
    first = reached.sort_values(["n_runs", "n_directions", "n_samples"]).iloc[0]
    assert (res.recommended["n_runs"], res.recommended["n_samples"]) == (first["n_runs"], first["n_samples"])
    assert "smallest design reaching power 0.9" in res.summary()
    none = power_analysis(effect=0.0, n_runs=[2], n_directions=[5], n_samples=[20], replicates=20,
                          rng=np.random.default_rng(6))
    assert none.recommended is None and "no design on the grid reaches" in none.summary()
    d = json.loads(json.dumps(res.to_dict()))
    assert d["kind"] == "slope" and len(d["designs"]) == 6
    assert isinstance(res, PowerResult)


def test_same_seed_same_result():
    kw = dict(effect=0.1, n_runs=[3], n_directions=[8], n_samples=[50], replicates=20)
    a = power_analysis(rng=np.random.default_rng(9), **kw).table
    b = power_analysis(rng=np.random.default_rng(9), **kw).table
    assert a.equals(b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="ratio"), r"`kind` must be one of \['slope', 'difference'\]; got 'ratio'"),
    (dict(effect=float("inf")), r"`effect` must be a finite number"),
    (dict(baseline="a"), r"`baseline` must be a finite number"),
    (dict(target_power=1.0), r"`target_power` must be in \(0, 1\)"),
    (dict(alpha=0.5), r"`alpha` must be in \(0, 0.5\)"),
    (dict(replicates=5), r"`replicates` must be an integer >= 10"),
    (dict(n_runs=[1, 3]), r"`n_runs` must hold integers >= 2; got 1"),
    (dict(n_runs=[]), r"`n_runs` must be a non-empty sequence of integers >= 2"),
    (dict(n_directions=[2]), r"`n_directions` must hold integers >= 3"),
    (dict(n_samples="100"), r"`n_samples` must be a non-empty sequence of integers >= 3"),
    (dict(n_directions=[5], n_nonpositive=3), r"`n_directions` must leave at least 3 positive eigenvalues"),
    (dict(rng=1), r"`rng` must be a numpy.random.Generator"),
    (dict(noise="cauchy"), r"`noise` must be one of"),
    (dict(df=2.0), r"`df` must be >= 5.0"),
])
def test_options_are_validated(kwargs, match):
    kw = dict(effect=0.1, replicates=10, n_runs=[2], n_directions=[5], n_samples=[10],
              rng=np.random.default_rng(0))
    kw.update(kwargs)
    with pytest.raises(InputError, match=match):
        power_analysis(**kw)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "power.json"
    rc = main(["-q", "power", "--effect", "0.3", "--runs", "2,4", "--directions", "8", "--samples", "60",
               "--replicates", "20", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "runs/group" in text and "power ± MC SE" in text
    d = json.loads(out.read_text())
    api = power_analysis(effect=0.3, n_runs=[2, 4], n_directions=[8], n_samples=[60], replicates=20,
                         rng=np.random.default_rng(0))
    assert [x["power"] for x in d["designs"]] == api.table["power"].tolist()


def test_cli_bad_grid_is_one_line_exit_2(capsys):
    rc = main(["power", "--effect", "0.3", "--runs", "2,x"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.search(r"`--runs` takes comma-separated integers", err)
