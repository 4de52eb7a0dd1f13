"""seed_scheme = "matched": one seed gives every method the same initial weights and data
order, and the statistics compare such runs paired (issue 11's matched seeds)."""

import json

import numpy as np
import pytest

from varprinciple.collect.config import validate_config
from varprinciple.collect.run import build_run, expand_sweep
from varprinciple.simulate import simulate
from varprinciple.stats import analyze

torch = pytest.importorskip("torch")

CFG = {"data": {"name": "teacher_student", "n_train": 64, "n_test": 0},
       "model": {"arch": "mlp", "widths": [6]},
       "train": {"method": ["gd", "sgd", "dropout"], "seed": [0, 1], "steps": 5, "batch_size": 8},
       "probe": {"top_k": 2, "n_samples": 10, "sources": ["sgd"], "n_random": 0, "tr_hc_samples": 0}}


def _init(spec):
    _ds, _loss, model, g, _t, _d = build_run(spec, ".", "cpu")
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), g


def _specs(scheme):
    cfg = json.loads(json.dumps(CFG))
    cfg["train"]["seed_scheme"] = scheme
    return {s.run_id: s for s in expand_sweep(validate_config(cfg))}


def test_matched_scheme_gives_every_method_one_initialisation_and_data_order_per_seed():
    specs = _specs("matched")
    by_seed = {}
    for s in specs.values():
        by_seed.setdefault(s.seed, []).append(s)
    for seed, group in by_seed.items():
        inits = [_init(s) for s in group]
        for w, g in inits[1:]:
            torch.testing.assert_close(w, inits[0][0], rtol=0, atol=0)
            # the training stream (data order, masks) starts at the same state too
            assert torch.equal(g.get_state(), inits[0][1].get_state())
        assert len({s.order_seed for s in group}) == 1 and len({s.init_seed for s in group}) == 1
    w0, _ = _init(by_seed[0][0])
    w1, _ = _init(by_seed[1][0])
    assert not torch.equal(w0, w1)


def test_per_run_scheme_keeps_its_seeds():
    per_run, default = _specs("per_run"), {s.run_id: s for s in expand_sweep(validate_config(CFG))}
    assert {k: v.train_seed for k, v in per_run.items()} == {k: v.train_seed for k, v in default.items()}
    w = [_init(s)[0] for s in per_run.values() if s.seed == 0]
    assert not torch.equal(w[0], w[1])
    assert all(s.init_seed is None for s in per_run.values())
    # the scheme key does not enter the training seed: switching it changes init only through init_seed
    matched = _specs("matched")
    assert {k: v.train_seed for k, v in matched.items()} == {k: v.train_seed for k, v in per_run.items()}


def test_bad_scheme_is_refused():
    from varprinciple.errors import ConfigError
    cfg = json.loads(json.dumps(CFG))
    cfg["train"]["seed_scheme"] = "shared"
    with pytest.raises(ConfigError, match="seed_scheme"):
        validate_config(cfg)


def _mark_matched(root):
    for rj in sorted(root.rglob("run.json")):
        meta = json.loads(rj.read_text())
        i = int(meta["run_id"].rsplit("-s", 1)[1])  # simulate names runs METHOD-sI
        meta.update(seed_scheme="matched", init_seed=100 + i, order_seed=200 + i)
        rj.write_text(json.dumps(meta))


def test_matched_runs_of_two_methods_are_compared_paired(tmp_path):
    simulate(tmp_path / "logs", methods={"gd": 1.0, "sgd": 1.2}, runs_per_method=4, sources=("sgd",),
             n_directions=8, n_samples=60, rng=np.random.default_rng(5))
    res0 = analyze(tmp_path / "logs", resamples=0)
    row0 = res0.comparisons[res0.comparisons["quantity"] == "slope"].iloc[0]
    assert not row0["paired"]
    _mark_matched(tmp_path / "logs")
    res = analyze(tmp_path / "logs", resamples=0)
    row = res.comparisons[res.comparisons["quantity"] == "slope"].iloc[0]
    assert row["paired"] and row["n_a"] == row["n_b"] == 4
    # paired difference = mean of the per-seed differences
    assert np.isclose(row["difference"], row0["difference"])
    assert row["df"] == 3
