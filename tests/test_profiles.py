"""Loss profiles: filter-normalised random directions and run-to-run straight lines."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from varprinciple.collect.config import validate_config
from varprinciple.collect.profiles import (add_interpolation_profile, filter_normalized_direction,
                                           interpolation_profile, random_profiles)
from varprinciple.collect.run import collect
from varprinciple.errors import InputError
from varprinciple.io import read_logset

CFG = {"data": {"n_train": 80, "n_test": 10}, "model": {"widths": [5]},
       "train": {"method": ["gd", "sgd"], "steps": 40, "batch_size": 8, "lr": 0.2},
       "probe": {"top_k": 2, "n_samples": 6, "n_random": 1, "hutchinson_probes": 2, "tr_hc_samples": 0},
       "trajectory": {"window": 80, "every": 4, "n_components": 3, "profile_points": 7, "random_profiles": 2}}


def test_filter_normalisation_matches_every_filter_norm():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    d = filter_normalized_direction(conv, torch.Generator().manual_seed(1))
    for p, di in zip(conv.parameters(), d):
        if p.dim() > 1:
            dims = tuple(range(1, p.dim()))
            torch.testing.assert_close(torch.linalg.vector_norm(di, dim=dims),
                                       torch.linalg.vector_norm(p.detach(), dim=dims))
        else:
            assert (di == 0).all()


def test_profiles_are_quadratic_for_a_linear_model_under_mse():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.randn(30, 1, generator=g, dtype=torch.float64)
    m = nn.Linear(3, 1, bias=False).double()
    df = random_profiles(m, "mse", X, y, n_directions=1, points=9, generator=g)
    coef = np.polyfit(df["t"], df["loss"], 2, full=True)
    assert coef[1][0] < 1e-20                               # an exact parabola in t
    with pytest.raises(InputError, match="`n_directions` >= 1"):
        random_profiles(m, "mse", X, y, n_directions=0, generator=g)


def test_interpolation_endpoints_and_errors():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = X @ torch.ones(3, 1, dtype=torch.float64)
    m = nn.Linear(3, 1).double()
    a = {k: v.clone() for k, v in m.state_dict().items()}
    b = {k: v + 1.0 for k, v in a.items()}
    df = interpolation_profile(m, "mse", X, y, a, b, points=7, t_range=(0.0, 1.0))
    m.load_state_dict(b)
    from varprinciple.collect.train import evaluate
    assert df["loss"].iloc[-1] == pytest.approx(evaluate(m, "mse", X, y, None)[0])
    with pytest.raises(InputError, match="missing from a state_dict"):
        interpolation_profile(m, "mse", X, y, {}, b)


def test_collect_logs_random_and_pc_profiles_and_a_run_to_run_line(tmp_path):
    out = tmp_path / "logs"
    collect(validate_config(CFG), out)
    runs = {r.method: out / r.run_id for r in read_logset(out).runs}
    prof = pd.read_parquet(runs["gd"] / "loss_profiles.parquet")
    assert set(prof["kind"]) == {"random", "pc"} and (prof["kind"] == "random").sum() == 2 * 7
    rnd = prof[(prof["kind"] == "random") & (prof["t"] == 0)]
    meta = json.loads((runs["gd"] / "run.json").read_text())
    np.testing.assert_allclose(rnd["loss"], meta["final"]["train_loss"], rtol=1e-5)
    line = add_interpolation_profile(runs["gd"], runs["sgd"], points=5, t_range=(0.0, 1.0))
    meta_b = json.loads((runs["sgd"] / "run.json").read_text())
    lines = line[line["kind"] == "interpolation"]
    np.testing.assert_allclose(lines["loss"].iloc[[0, -1]], [meta["final"]["train_loss"],
                                                            meta_b["final"]["train_loss"]], rtol=1e-5)
    # appended, and re-adding replaces rather than duplicates; the run still reads as valid
    add_interpolation_profile(runs["gd"], runs["sgd"], points=5, t_range=(0.0, 1.0))
    again = pd.read_parquet(runs["gd"] / "loss_profiles.parquet")
    assert (again["kind"] == "interpolation").sum() == 5 and (again["kind"] == "random").sum() == 14
    assert len(read_logset(out).runs) == 2
    other = tmp_path / "other"
    shutil.copytree(runs["sgd"], other)
    m = json.loads((other / "run.json").read_text())
    m["config"]["model"]["widths"] = [6]
    (other / "run.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match=r"\[model\] differs"):
        add_interpolation_profile(runs["gd"], other)
    (runs["sgd"] / "model.pt").unlink()
    with pytest.raises(InputError, match="model.pt missing"):
        add_interpolation_profile(runs["gd"], runs["sgd"])
