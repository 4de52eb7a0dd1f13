"""Tests of varprinciple.simulate and `varprinciple simulate`: truth, options, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from varprinciple.cli import main
from varprinciple.errors import InputError
from varprinciple.io import read_logset
from varprinciple.simulate import read_truth, simulate, simulate_logset


def _ols_slope(block) -> float:
    pos = block.is_hessian & (block.eigenvalue > 0)
    return stats.linregress(np.log(block.eigenvalue[pos]), np.log(block.variance[pos])).slope


# ------------------------------------------------------------------ writing, reading, determinism


def test_written_set_reads_back_and_equals_the_in_memory_set(tmp_path):
    kw = dict(methods={"sgd": 1.0, "dropout": 0.6}, runs_per_method=2, n_random=3, steps=(0, 50),
              blocks=["fc1", "fc2"], noise={"sgd": "student-t"})
    truth = simulate(tmp_path / "s", rng=np.random.default_rng(3), **kw)
    mem, truth_mem = simulate_logset(rng=np.random.default_rng(3), **kw)
    disk = read_logset(tmp_path / "s")
    assert [r.run_id for r in disk.runs] == [r.run_id for r in mem.runs]
    assert len(disk.runs) == 4 and disk.identical == []
    for r1, r2 in zip(disk.runs, mem.runs):
        assert r1.meta["truth"] == json.loads(json.dumps(r2.meta["truth"]))
        assert len(r1.blocks) == len(r2.blocks) == 2 * 3 * 2  # steps x sources x blocks
        for b1, b2 in zip(r1.blocks, r2.blocks):
            assert (b1.step, b1.source, b1.block) == (b2.step, b2.source, b2.block)
            np.testing.assert_array_equal(b1.values, b2.values)
            np.testing.assert_array_equal(b1.eigenvalue, b2.eigenvalue)
            np.testing.assert_array_equal(b1.direction, b2.direction)
            np.testing.assert_array_equal(b1.basis, b2.basis)
            np.testing.assert_allclose(b1.variance, b2.variance, rtol=1e-12)
    pd.testing.assert_frame_equal(truth.to_frame(), truth_mem.to_frame())
    pd.testing.assert_frame_equal(read_truth(tmp_path / "s").to_frame(), truth.to_frame(), check_dtype=False)
    # block column present in both tables; random directions have no eigenvalue
    assert set(pq.read_table(tmp_path / "s" / "sgd-s0" / "noise.parquet").column("block").to_pylist()) == {"fc1", "fc2"}
    b = disk.runs[0].blocks[0]
    assert np.isnan(b.eigenvalue[~b.is_hessian]).all() and (~b.is_hessian).sum() == 3


def test_same_seed_same_files_other_seed_other_draws(tmp_path):
    kw = dict(methods={"sgd": 1.0}, runs_per_method=2, n_samples=50)
    simulate(tmp_path / "a", rng=np.random.default_rng(7), **kw)
    simulate(tmp_path / "b", rng=np.random.default_rng(7), **kw)
    simulate(tmp_path / "c", rng=np.random.default_rng(8), **kw)
    for f in ("noise.parquet", "eigen.parquet"):
        ta = pq.read_table(tmp_path / "a" / "sgd-s1" / f)
        assert ta.equals(pq.read_table(tmp_path / "b" / "sgd-s1" / f))
    va = pq.read_table(tmp_path / "a" / "sgd-s1" / "noise.parquet").column("value").to_numpy()
    vc = pq.read_table(tmp_path / "c" / "sgd-s1" / "noise.parquet").column("value").to_numpy()
    assert not np.array_equal(va, vc)


def test_overwrite_only_a_simulated_set(tmp_path):
    out = tmp_path / "s"
    simulate(out, methods={"sgd": 1.0}, runs_per_method=1, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="is not empty; choose a new directory"):
        simulate(out, methods={"sgd": 1.0}, runs_per_method=1, rng=np.random.default_rng(0))
    simulate(out, methods={"gd": 1.0}, runs_per_method=1, overwrite=True, rng=np.random.default_rng(0))
    assert [r.run_id for r in read_logset(out).runs] == ["gd-s0"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no truth.json: refusing to overwrite"):
        simulate(other, methods={"sgd": 1.0}, overwrite=True, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="is a file; expected a directory"):
        simulate(other / "notes.txt", methods={"sgd": 1.0}, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="no such file"):
        read_truth(other)


def test_float32_values_are_accepted_by_the_reader(tmp_path):
    simulate(tmp_path / "s", methods={"sgd": 1.0}, runs_per_method=1, float32=True, rng=np.random.default_rng(0))
    t = pq.read_table(tmp_path / "s" / "sgd-s0" / "noise.parquet")
    assert str(t.schema.field("value").type) == "float"
    assert read_logset(tmp_path / "s").runs[0].blocks[0].values.dtype == np.float64


# ------------------------------------------------------------------ the truth is what is simulated


def test_truth_recovered_on_average():
    """Mean OLS exponent over runs equals the mean true exponent within Monte Carlo error.

    Gaussian noise: log s^2 has the same bias at every direction (it depends only on K), so
    OLS of log s^2 on log lambda is unbiased for b given the run's directions.
    """
    logset, truth = simulate_logset(methods={"sgd": 0.7}, runs_per_method=200, sources=("sgd", "isotropic"),
                                    n_samples=100, noise="gaussian", slope_sd=0.2, scatter=0.3,
                                    rng=np.random.default_rng(11))
    t = truth.to_frame().set_index(["run_id", "source"])["slope"]
    err, iso, true_b = [], [], []
    for r in logset.runs:
        for b in r.blocks:
            if b.source == "sgd":
                err.append(_ols_slope(b) - t[(r.run_id, "sgd")])
                true_b.append(t[(r.run_id, "sgd")])
            else:
                iso.append(_ols_slope(b))
    err, iso, true_b = map(np.asarray, (err, iso, true_b))
    se = err.std(ddof=1) / np.sqrt(len(err))
    assert abs(err.mean()) < 4 * se
    assert abs(iso.mean()) < 4 * iso.std(ddof=1) / np.sqrt(len(iso))
    # the run-to-run spread of the true exponents is slope_sd (chi-square 99.9% interval)
    n = len(true_b)
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1)
    assert (n - 1) * true_b.var(ddof=1) / 0.2**2 > lo
    assert (n - 1) * true_b.var(ddof=1) / 0.2**2 < hi
    assert abs(true_b.mean() - 0.7) < 4 * 0.2 / np.sqrt(n)


@pytest.mark.parametrize("family", ["gaussian", "student-t", "masked"])
def test_covariance_of_each_family_is_the_truth(family):
    """With many draws the sample variances approach the recorded truth for every family."""
    logset, _ = simulate_logset(methods={"sgd": 1.0}, runs_per_method=1, sources=("sgd",), n_samples=40_000,
                                noise=family, n_random=2, correlation=0.5, rng=np.random.default_rng(5))
    run = logset.runs[0]
    b = run.blocks[0]
    true = np.array(run.meta["truth"]["directions"]["step=0/source=sgd"]["variance"])
    true_r = np.array(run.meta["truth"]["directions"]["step=0/source=sgd"]["random_variance"])
    ratio = b.variance / np.concatenate([true, true_r])
    # SE of a variance ratio with K draws is sqrt((kurtosis - 1) / K) < 0.03 here
    np.testing.assert_allclose(ratio, 1.0, atol=0.06)
    corr = np.corrcoef(b.values, rowvar=False)
    assert np.abs(corr[np.triu_indices_from(corr, 1)]).max() > 0.2  # correlated projections
    z = (b.values - b.values.mean(0)) / b.values.std(0)
    kurt = (z**4).mean(0) - 3
    mean_over_sd = np.abs(b.values.mean(0)) / b.values.std(0)
    if family == "gaussian":
        assert np.abs(kurt).max() < 0.15 and mean_over_sd.max() < 0.03
    elif family == "student-t":  # df = 8: excess kurtosis of the latent t is 6 / (df - 4) = 1.5
        assert kurt.mean() > 0.3 and mean_over_sd.max() < 0.03
    else:  # masked: skewed, non-zero mean
        assert np.abs(stats.skew(b.values, axis=0)).mean() > 0.3 and mean_over_sd.max() > 0.1


def test_spectrum_has_nonpositive_eigenvalues_and_isotropic_control_is_flat():
    logset, _ = simulate_logset(methods={"sgd": 1.0}, runs_per_method=1, n_nonpositive=3, n_random=4,
                                n_samples=20_000, rng=np.random.default_rng(2))
    blocks = {b.source: b for b in logset.runs[0].blocks}
    lam = blocks["sgd"].eigenvalue[blocks["sgd"].is_hessian]
    assert np.all(np.diff(lam) <= 0)  # rank 0 = largest
    assert (lam <= 0).sum() == 3 and (lam == 0).sum() == 1
    iso = blocks["isotropic"]
    np.testing.assert_allclose(iso.variance, np.exp(-3.5), rtol=0.06)
    # random directions carry much less variance than the sharp Hessian directions for sgd
    sgd = blocks["sgd"]
    assert sgd.variance[sgd.is_hessian][:5].mean() > 100 * sgd.variance[~sgd.is_hessian].mean()
    truth = logset.runs[0].meta["truth"]["directions"]["step=0/source=sgd"]
    assert truth["hessian_random_ratio"] == pytest.approx(np.mean(truth["variance"]) / np.mean(truth["random_variance"]))


# ------------------------------------------------------------------ option validation

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(methods={}), r"`methods` must be a non-empty mapping"),
    (dict(methods={"a/b": 1.0}), r"`methods` keys must be non-empty names without '/'"),
    (dict(methods={"sgd": "x"}), r"`methods\['sgd'\]` must be a number"),
    (dict(methods={"sgd": float("nan")}), r"`methods\['sgd'\]` must be a finite number"),
    (dict(runs_per_method=0), r"`runs_per_method` must be an integer >= 1; got 0"),
    (dict(sources=[]), r"`sources` must be a non-empty sequence"),
    (dict(sources=["sgd", "sgd"]), r"`sources` must be distinct non-empty names"),
    (dict(source_offsets={"adam": 0.1}), r"`source_offsets` names source\(s\) \['adam'\]"),
    (dict(source_offsets={"isotropic": 0.1}), r"`source_offsets` cannot shift 'isotropic'"),
    (dict(n_directions=2), r"`n_directions` must be an integer >= 3"),
    (dict(n_samples=2), r"`n_samples` must be an integer >= 3"),
    (dict(n_random=-1), r"`n_random` must be an integer >= 0"),
    (dict(n_directions=5, n_nonpositive=3), r"`n_nonpositive` must leave at least 3 positive eigenvalues"),
    (dict(steps=[]), r"`steps` must be a non-empty sequence of integers >= 0"),
    (dict(steps=[0, -1]), r"`steps` must be an integer >= 0"),
    (dict(steps=[1, 1]), r"`steps` must be distinct"),
    (dict(noise="cauchy"), r"`noise` must be one of \['gaussian', 'student-t', 'masked'\]"),
    (dict(noise=3), r"`noise` must be a family name or a mapping"),
    (dict(noise={"sgd": "laplace"}), r"`noise` for source 'sgd' must be one of"),
    (dict(noise={"adam": "gaussian"}), r"`noise` names source\(s\) \['adam'\] that are not in `sources`"),
    (dict(noise={"isotropic": "masked"}), r"`noise` for source 'isotropic' must be 'gaussian'"),
    (dict(df=4.0), r"`df` must be >= 5.0; got 4.0"),
    (dict(drop_prob=1.0), r"`drop_prob` must be in \(0.0, 1.0\); got 1.0"),
    (dict(drop_prob=0.0), r"`drop_prob` must be in \(0.0, 1.0\)"),
    (dict(n_units=5), r"`n_units` must be >= n_directions \+ n_random = 20"),
    (dict(correlation=1.0), r"`correlation` must be in \[0.0, 1.0\); got 1.0"),
    (dict(slope_sd=-0.1), r"`slope_sd` must be >= 0.0"),
    (dict(scatter=-1), r"`scatter` must be >= 0.0"),
    (dict(lambda_max=0.0), r"`lambda_max` must be > 0.0"),
    (dict(eigen_decay=0), r"`eigen_decay` must be > 0.0"),
    (dict(random_curvature=2.0), r"`random_curvature` must be in \(0.0, 1.0\]"),
    (dict(blocks=[]), r"`blocks` must be None or a non-empty sequence"),
    (dict(blocks=["a", "a"]), r"`blocks` must be distinct non-empty names"),
    (dict(rng=0), r"`rng` must be a numpy.random.Generator"),
])
def test_options_are_validated_up_front(tmp_path, kwargs, match):
    kwargs = {"rng": RNG, **kwargs}
    with pytest.raises(InputError, match=match):
        simulate(tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()  # nothing written


# ------------------------------------------------------------------ CLI


def test_cli_writes_the_same_set_as_the_api(tmp_path, capsys):
    rc = main(["-q", "simulate", str(tmp_path / "cli"), "--method", "sgd=1.0,dropout=0.5", "--runs", "2",
               "--random", "3", "--noise", "sgd=student-t", "--noise", "dropout=masked", "--steps", "0,10",
               "--seed", "4", "--source-offset", "dropout=-0.1", "--blocks", "a,b"])
    assert rc == 0
    assert "wrote 4 runs" in capsys.readouterr().out
    simulate(tmp_path / "api", methods={"sgd": 1.0, "dropout": 0.5}, runs_per_method=2, n_random=3,
             noise={"sgd": "student-t", "dropout": "masked"}, steps=[0, 10], source_offsets={"dropout": -0.1},
             blocks=["a", "b"], rng=np.random.default_rng(4))
    for rid in ("sgd-s0", "dropout-s1"):
        assert pq.read_table(tmp_path / "cli" / rid / "noise.parquet").equals(
            pq.read_table(tmp_path / "api" / rid / "noise.parquet"))
    assert json.loads((tmp_path / "cli" / "truth.json").read_text()) == json.loads(
        (tmp_path / "api" / "truth.json").read_text())


@pytest.mark.parametrize("argv, match", [
    (["--method", "sgd"], r"`--method` takes NAME=VALUE items; got 'sgd'"),
    (["--method", "sgd=fast"], r"`--method` value for 'sgd' must be a number"),
    (["--steps", "0,x"], r"`--steps` takes integers"),
    (["--df", "3"], r"`df` must be >= 5.0"),
    (["--noise", "student-t,masked"], r"`--noise` takes NAME=VALUE items"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv, match):
    rc = main(["simulate", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    import re
    assert re.search(match, err)


# ------------------------------------------------------------------ the shipped example


EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"


def _assert_same_json(a, b, path="run.json", rtol=1e-12):
    """Equal JSON values; floats within ``rtol`` (float64 results computed on another machine
    may differ in the last digits: libm/BLAS builds differ), everything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), path
        np.testing.assert_allclose(b, a, rtol=rtol, atol=0, err_msg=path)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_same_json(a[k], b[k], f"{path}.{k}", rtol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_json(x, y, f"{path}[{i}]", rtol)
    else:
        assert a == b, path


def test_assert_same_json_tolerates_last_digits_only():
    _assert_same_json({"x": [0.01585494163213808, 1, "a"]}, {"x": [0.015854941632138075, 1, "a"]})
    with pytest.raises(AssertionError):
        _assert_same_json({"x": [0.0158549]}, {"x": [0.0158550]})
    with pytest.raises(AssertionError):
        _assert_same_json({"x": 1}, {"x": 2})


def test_shipped_example_is_reproducible(tmp_path):
    """data/README.md's command re-creates data/example on any machine: float32 noise values
    within one float32 ulp (they come from float64 arithmetic whose last bits may differ between
    machines, so a cast on a rounding boundary may flip one bit), run.json floats within 1e-12
    relative, everything else exactly. Bitwise reproducibility on one machine is tested by
    test_same_seed_same_files_other_seed_other_draws and test_cli_writes_the_same_set_as_the_api."""
    rc = main(["-q", "simulate", str(tmp_path / "ex"), "--method", "gd=1.0,sgd=1.0,dropout=0.8",
               "--source-offset", "dropout=-0.2", "--runs", "4", "--directions", "14", "--random", "3",
               "--samples", "80", "--noise", "sgd=student-t", "--noise", "dropout=masked", "--float32",
               "--seed", "2026"])
    assert rc == 0
    shipped = sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir())
    assert shipped == sorted(p.name for p in (tmp_path / "ex").iterdir() if p.is_dir())
    assert len(shipped) == 12
    for rid in shipped:
        a = pq.read_table(EXAMPLE / rid / "noise.parquet")
        b = pq.read_table(tmp_path / "ex" / rid / "noise.parquet")
        va, vb = a.column("value").to_numpy(), b.column("value").to_numpy()
        assert va.dtype == vb.dtype == np.float32
        np.testing.assert_array_max_ulp(va, vb, maxulp=1)
        assert a.drop(["value"]).equals(b.drop(["value"]))
        _assert_same_json(json.loads((EXAMPLE / rid / "run.json").read_text()),
                          json.loads((tmp_path / "ex" / rid / "run.json").read_text()), f"{rid}/run.json")
    size = sum(p.stat().st_size for p in EXAMPLE.rglob("*") if p.is_file())
    assert size < 500_000


def test_shipped_example_gives_a_real_summary(capsys):
    rc = main(["-q", "test", str(EXAMPLE), "--resamples", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dropout-s3" in out and "Groups" in out and "Comparisons" in out


def test_simulate_and_power_run_with_torch_unimportable(tmp_path):
    """`varprinciple simulate` and `varprinciple power` need numpy only, never torch."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import importlib.abc, sys
        class _NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked")
        sys.meta_path.insert(0, _NoTorch())
        from varprinciple.cli import main
        assert main(["-q", "simulate", sys.argv[1], "--runs", "2", "--directions", "6", "--samples", "20"]) == 0
        assert main(["-q", "power", "--effect", "0.5", "--runs", "2", "--directions", "6", "--samples", "20",
                     "--replicates", "10"]) == 0
        assert "torch" not in sys.modules
    """)
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sim")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 runs" in r.stdout and "runs/group" in r.stdout
