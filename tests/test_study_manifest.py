"""Study manifests (study/manifest.py) and the design numbers (study/design.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from varprinciple.errors import ConfigError, InputError
from varprinciple.study import load_manifest
from varprinciple.study.design import design_summary, tost_power, welch_mde

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "studies" / "replication.toml"


def test_replication_manifest_is_valid_and_its_configs_expand():
    pytest.importorskip("torch")
    from varprinciple.collect.config import load_config
    from varprinciple.collect.run import expand_sweep
    m = load_manifest(MANIFEST)
    assert {e.name for e in m.experiments} >= {"digits_mlp", "mnist1d_mlp", "digits_cnn", "linear_control", "eos_mse"}
    assert m.margins["slope"] == 0.3 and m.margin_why["slope"].strip()
    for e in m.experiments:
        for quick in (False, True):
            specs = [s for c in e.config_paths(quick) for s in expand_sweep(load_config(c))]
            seeds = {}
            for s in specs:
                seeds.setdefault(s.group, set()).add(s.seed)
            # seeds matched across arms: every group of an experiment has the same seed list
            assert len({frozenset(v) for v in seeds.values()}) == 1, (e.name, quick, seeds)
            if not quick and e.role == "main" and e.equivalence_margin is not None:
                # the experiments the [power] statement (TOST at a margin) is about: at least its
                # runs per arm (the digits MLP arms have more; psi_digits, with no margin, has 4)
                assert all(len(v) >= m.power["runs_per_arm"] for v in seeds.values())


def _write(tmp_path, text):
    p = tmp_path / "m.toml"
    p.write_text(text)
    (tmp_path / "c.toml").write_text("[train]\nsteps = 2\n")
    return p


GOOD = """
[study]
name = "t"
[margins]
slope = 0.3
slope_why = "because"
[[experiment]]
name = "a"
configs = ["c.toml"]
[[claim]]
id = "x"
family = "f"
text = "t"
quantity = "b"
table = "groups"
kind = "equivalent"
margin = "slope"
"""


def test_manifest_minimal(tmp_path):
    m = load_manifest(_write(tmp_path, GOOD))
    assert m.claims[0].margin == 0.3 and m.experiments[0].quick == m.experiments[0].configs
    m2 = load_manifest(_write(tmp_path, GOOD.replace('name = "t"', 'name = "t"\nlimits = """b over\n  1 decade"""')
                              + 'controls = ["x"]\n'))
    assert m2.limits == "b over 1 decade" and m2.claims[0].controls == ("x",)


@pytest.mark.parametrize("old,new,match", [
    ('slope_why = "because"', 'slope_why = " "', "every margin needs its justification"),
    ('name = "t"', 'name = "t"\nbogus = 1', r"\[study\] bogus: unknown key"),
    ('configs = ["c.toml"]', 'configs = ["missing.toml"]', "config .*missing.toml not found"),
    ('margin = "slope"', 'margin = "nope"', "margin 'nope' is not a \\[margins\\] name"),
    ('kind = "equivalent"', 'kind = "sideways"', "`kind` must be one of"),
    ('[study]\nname = "t"', '[study]\ntitle = "t"', r"\[study\] name: required"),
    ('slope = 0.3', 'slope = -1', r"\[margins\] slope: must be > 0"),
    ('margin = "slope"', 'margin = "slope"\ncontrols = ["ghost"]', "control 'ghost' is not a declared claim id"),
    ('slope_why = "because"', 'slope_why = "because"\n[power]\nfamily_size = 0',
     r"\[power\] family_size: must be an integer >= 1"),
])
def test_manifest_errors(tmp_path, old, new, match):
    with pytest.raises(ConfigError, match=match):
        load_manifest(_write(tmp_path, GOOD.replace(old, new)))


def test_manifest_missing_file(tmp_path):
    with pytest.raises(InputError, match="study manifest not found"):
        load_manifest(tmp_path / "none.toml")


def test_mde_matches_statsmodels():
    from statsmodels.stats.power import TTestIndPower, TTestPower
    for n in (4, 6, 10):
        d = TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
        assert welch_mde(n, 0.15) == pytest.approx(d * 0.15, rel=1e-3)
        d1 = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert welch_mde(n, 0.15, kind="paired") == pytest.approx(d1 * 0.15, rel=1e-3)


def test_tost_power_matches_brute_force_simulation():
    # oracle: simulate raw per-run values and run scipy's one-sided t tests (TOST) on them
    rng = np.random.default_rng(3)
    n, sd, margin, reps = 5, 0.15, 0.3, 4000
    a = rng.normal(0.0, sd, (reps, n))
    b = rng.normal(0.05, sd, (reps, n))
    # the applied rule: Welch (each arm's own variance, Welch–Satterthwaite df)
    lo = sps.ttest_ind(a + margin, b, axis=1, alternative="greater", equal_var=False).pvalue
    hi = sps.ttest_ind(a - margin, b, axis=1, alternative="less", equal_var=False).pvalue
    brute = float(np.mean(np.maximum(lo, hi) < 0.05))
    p, se = tost_power(n, sd, margin, true_difference=-0.05, rng=np.random.default_rng(4))
    tol = 4 * np.sqrt(brute * (1 - brute) / reps + se ** 2)
    assert abs(p - brute) < tol


def test_tost_power_under_holm_matches_brute_force_and_the_audit():
    # oracle: raw per-run values of m = 4 independent rows, scipy's Welch TOST per row, then the
    # statistics layer's Holm over the rows of each replicate
    from varprinciple.stats.inference import holm
    rng = np.random.default_rng(5)
    n, sd, margin, reps, m = 6, 0.15, 0.3, 3000, 4
    a = rng.normal(0.0, sd, (reps, m, n))
    b = rng.normal(0.0, sd, (reps, m, n))
    lo = sps.ttest_ind(a + margin, b, axis=2, alternative="greater", equal_var=False).pvalue
    hi = sps.ttest_ind(a - margin, b, axis=2, alternative="less", equal_var=False).pvalue
    adj = np.array([holm(row) for row in np.maximum(lo, hi)])
    brute = float(np.mean(adj < 0.05))
    p, se = tost_power(n, sd, margin, family_size=m, reps=20_000, rng=np.random.default_rng(6))
    assert abs(p - brute) < 4 * np.sqrt(brute * (1 - brute) / (reps * m) * m + se ** 2)  # rows share Holm
    # the issue-18 audit's Welch Monte Carlo: 0.876 at n = 6, 0.765 at n = 5 (single test)
    for k, ref in ((6, 0.876), (5, 0.765)):
        p1, se1 = tost_power(k, sd, margin, reps=100_000, rng=np.random.default_rng(k))
        assert abs(p1 - ref) < 4 * se1 + 0.003
    # Holm over 12 rows: the first step tests at alpha / 12 -> far below the single-test power
    p12, _ = tost_power(6, sd, margin, family_size=12, reps=10_000, rng=np.random.default_rng(7))
    assert 0.3 < p12 < 0.45


def test_vectorised_holm_rows_equal_the_statistics_layers_holm():
    from varprinciple.stats.inference import holm
    from varprinciple.study.design import _holm_rows
    p = np.random.default_rng(8).uniform(0, 0.2, (50, 7))
    assert np.allclose(_holm_rows(p), np.array([holm(r) for r in p]))


def test_design_summary_and_errors():
    d = design_summary(sd=0.15, n=6, margins={"slope": 0.3}, grid=(5, 6))
    assert d.table["tost_power_0.3"].is_monotonic_increasing and "minimum detectable difference" in d.summary()
    dh = design_summary(sd=0.15, n=6, margins={"slope": 0.3}, grid=(6,), family_size=12, family="similar b",
                        reps=20_000)
    assert "Holm over the 12 rows of family 'similar b'" in dh.summary() and "Welch–Satterthwaite" in dh.summary()
    assert dh.power_at(0.3) < dh.table["tost_power_0.3"].iloc[0]
    with pytest.raises(InputError, match="`family_size` must be"):
        tost_power(5, 0.1, 0.3, family_size=0)
    with pytest.raises(InputError, match="`n` must be an integer >= 2"):
        welch_mde(1, 0.1)
    with pytest.raises(InputError, match="`sd` must be > 0"):
        welch_mde(5, 0)
    with pytest.raises(InputError, match="`alpha` must be in"):
        tost_power(5, 0.1, 0.3, alpha=0.6)
    with pytest.raises(InputError, match="`kind` must be 'welch' or 'paired'"):
        welch_mde(5, 0.1, kind="x")
    with pytest.raises(InputError, match="`margin` must be > 0"):
        tost_power(5, 0.1, 0)


def test_render_redoes_claims_and_page_from_committed_results_without_collecting(tmp_path, capsys):
    import json
    import shutil

    from varprinciple.cli import main
    root = Path(__file__).resolve().parents[1]
    committed = root / "reports" / "replication"
    out = tmp_path / "study"
    (out / "results").mkdir(parents=True)
    for name in ("linear_control", "random_walk_control"):
        for f in committed.glob(f"results/{name}.*"):
            shutil.copy(f, out / "results" / f.name)
    shutil.copy(committed / "study.json", out / "study.json")
    assert main(["-q", "study", "--study", str(root / "studies" / "replication.toml"), "--out", str(out),
                 "--render"]) == 0
    assert "claims, design and page redone" in capsys.readouterr().out
    assert not (out / "logs").exists()  # nothing collected
    claims = {c["claim_id"]: c for c in json.loads((out / "claims.json").read_text())["claims"]}
    assert claims["control_linear_b1"]["verdict"] == "equivalent"
    assert claims["b_sgd"]["verdict"] == "not evaluated"  # its experiments' results are absent
    page = (out / "report.html").read_text()
    assert 'id="claim-findings"' in page and "Known limits" in page
    assert json.loads((out / "design.json").read_text())["family_size"] == 14  # declared: no b_similar rows
    with pytest.raises(Exception, match="no results JSON"):
        from varprinciple.study.runner import render_manifest
        render_manifest(root / "studies" / "replication.toml", tmp_path / "empty")
