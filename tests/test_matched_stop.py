"""The matched-loss stop rule ([train] target_loss) and the trajectory hook of collect."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from varprinciple.collect.config import validate_config
from varprinciple.collect.run import collect, expand_sweep
from varprinciple.collect.train import train
from varprinciple.errors import ConfigError, InputError
from varprinciple.io import read_logset

TINY = {"data": {"n_train": 120, "n_test": 20}, "model": {"widths": [6]},
        "train": {"method": ["gd", "sgd"], "steps": 400, "batch_size": 16, "lr": 0.2, "log_every": 50},
        "probe": {"every": 100, "top_k": 3, "n_samples": 8, "n_random": 2, "hutchinson_probes": 4,
                  "tr_hc_samples": 4}}


def _cfg(**train):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return validate_config(raw)


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=g)
    return X, X @ torch.ones(3, 1), g


def test_train_stops_at_first_checked_step_below_target():
    X, y, g = _data()
    model = torch.nn.Linear(3, 1)
    probed = []
    res = train(model, "mse", X, y, method="gd", lr=0.05, steps=1000, batch_size=None, generator=g,
                target_loss=0.05, target_check_every=1, probe_steps=[5, 2000], log_every=1000,
                on_probe=lambda s, m: probed.append(s))
    curves = res.curves.set_index("step")["train_loss"]
    s = res.stop_step
    assert res.target_reached and res.steps == s
    # exact with check_every = 1: the loss at s is below the target, the one before is not
    assert curves[s] <= 0.05 and res.loss_at_stop == curves[s]
    assert probed == [5, s]                    # the stop step is probed, nothing after it
    assert 5 in curves.index                   # probe steps are on the training curve


def test_target_not_reached_is_reported(caplog):
    X, y, g = _data()
    with caplog.at_level(logging.WARNING, logger="varprinciple.collect.train"):
        res = train(torch.nn.Linear(3, 1), "mse", X, y, method="gd", lr=0.01, steps=20, batch_size=None,
                    generator=g, target_loss=1e-9)
    info = res.target_info()
    assert info["reached"] is False and info["stop_step"] is None and info["steps_trained"] == 20
    assert "NOT reached" in caplog.text


@pytest.mark.parametrize("kw, match", [({"target_loss": -1.0}, "target_loss"),
                                       ({"target_loss": 0.1, "target_check_every": 0}, "target_check_every")])
def test_train_target_errors(kw, match):
    X, y, g = _data()
    with pytest.raises(InputError, match=match):
        train(torch.nn.Linear(3, 1), "mse", X, y, method="gd", lr=0.1, steps=5, batch_size=None,
              generator=g, **kw)


def test_stop_rule_moves_no_seed():
    a, b = expand_sweep(_cfg()), expand_sweep(_cfg(target_loss=0.2, target_check_every=3))
    assert [(s.train_seed, s.probe_seed) for s in a] == [(s.train_seed, s.probe_seed) for s in b]


def test_collect_matched_and_unmatched_runs(tmp_path):
    # a target the gd run reaches and a budget too short for ... nothing: check both records
    out = tmp_path / "logs"
    collect(_cfg(target_loss=0.6), out)
    metas = {r.run_id: json.loads((out / r.run_id / "run.json").read_text()) for r in read_logset(out).runs}
    for rid, m in metas.items():
        tgt = m["target"]
        assert tgt["reached"] is True and tgt["loss_at_stop"] <= 0.6
        assert m["probe_steps"][-1] == tgt["stop_step"] == m["trained_steps"]
        assert all(p["train_loss"] is not None for p in m["probes"])
        assert m["hyperparameters"]["steps"] == 400          # the budget keeps the group key
        tr = pd.read_parquet(out / rid / "training.parquet")
        assert tr["step"].max() == tgt["stop_step"]
    out2 = tmp_path / "logs2"
    collect(_cfg(target_loss=1e-6, steps=30), out2)
    for r in read_logset(out2).runs:
        m = json.loads((out2 / r.run_id / "run.json").read_text())
        assert m["target"]["reached"] is False and m["trained_steps"] == 30


def test_trajectory_section_validation():
    with pytest.raises(ConfigError, match=r"\[trajectory\] window: needs >= 8 snapshots"):
        validate_config({"trajectory": {"window": 20, "every": 10}})
    with pytest.raises(ConfigError, match=r"\[trajectory\] n_components: must be <"):
        validate_config({"trajectory": {"window": 100, "every": 10, "n_components": 5}})
    with pytest.raises(ConfigError, match=r"\[trajectory\] params: give at least one"):
        validate_config({"trajectory": {"params": []}})


def test_collect_writes_trajectory_tables(tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(method="sgd", steps=100)
    raw["trajectory"] = {"window": 200, "every": 4, "n_components": 6, "params": ["fc0.weight"],
                         "profile_points": 5}
    out = tmp_path / "logs"
    collect(validate_config(raw), out)
    (run,) = read_logset(out).runs
    d = out / run.run_id
    pcs = pd.read_parquet(d / "trajectory.parquet")
    proj = pd.read_parquet(d / "trajectory_projections.parquet")
    prof = pd.read_parquet(d / "loss_profiles.parquet")
    assert list(pcs["component"]) == list(range(6)) and pcs["drift"].tolist() == [True] + [False] * 5
    assert (pcs["params"] == "fc0.weight").all()
    # the logged variances are the sample variances of the logged projections
    v = proj.pivot(index="step", columns="component", values="value").var(ddof=1).to_numpy()
    np.testing.assert_allclose(pcs["variance"], v, rtol=1e-10)
    assert proj["step"].min() == 100 + 100 and len(prof) == 6 * 5
    meta = json.loads((d / "run.json").read_text())
    assert meta["trajectory"]["start_step"] == 100


def test_unknown_trajectory_param(tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(method="gd", steps=10)
    raw["trajectory"] = {"window": 80, "every": 4, "n_components": 3, "params": ["fc9.weight"]}
    with pytest.raises(Exception, match="unknown parameter 'fc9.weight'"):
        collect(validate_config(raw), tmp_path / "x")
