"""`[probe] dropout_layers` as documented (docs/collection.md): a subset of the trained dropout
layers is the dropout source; the other trained layers are switched off for the probe only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from varprinciple.collect.api import probe_checkpoints, reprobe_run  # noqa: E402
from varprinciple.collect.config import load_config  # noqa: E402
from varprinciple.collect.run import build_run, collect, expand_sweep, probe_settings  # noqa: E402
from varprinciple.io import read_run  # noqa: E402

pytestmark = pytest.mark.torch

CONFIG = """
[data]
name = "teacher_student"
n_samples = 50
n_features = 3

[model]
widths = [4, 4]
activation = "tanh"

[train]
method = ["dropout"]
drop_prob = [0.2]
steps = 4
lr = 0.05
log_every = 2
checkpoints = true

[probe]
top_k = 2
n_samples = 8
n_random = 1
hutchinson_probes = 2
tr_hc_samples = 3
dropout_layers = [1]
"""


def test_probe_dropout_layers_subset_of_trained_dropout(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(CONFIG)
    cfg = load_config(p)
    res = collect(cfg, tmp_path / "logs")
    run = read_run(tmp_path / "logs" / res.ran[0])
    m = run.meta
    # training applied dropout after both hidden layers; the probe's source is layer 1 only
    assert m["config"]["model"]["dropout_layers"] is None and m["drop_prob"] == 0.2
    assert m["probe_dropout_layers"] == ["drop1"] and m["probe_dropout_disabled"] == ["drop0"]
    assert [s["name"] for s in m["dropout_sites"]] == ["drop1"]
    assert "dropout" in set(run.noise["source"])
    # the trained model still drops at both layers: the switch lasts only for the probe
    spec = expand_sweep(cfg)[0]
    _, _, model, *_ = build_run(spec, str(tmp_path), "cpu")
    assert model.drop0.p == 0.2 and model.drop1.p == 0.2
    # oracle: the same probe through the API on the model with drop0 switched off by hand
    model.load_state_dict(torch.load(tmp_path / "logs" / res.ran[0] / "model.pt", weights_only=True))
    model.drop0.p = 0.0
    ds, loss, _, _, ((X, y, _l), _t), names = build_run(spec, str(tmp_path), "cpu")
    ck = {s: tmp_path / "logs" / res.ran[0] / "checkpoints" / f"step_{s}.pt" for s in m["probe_steps"]}
    api = probe_checkpoints(model, loss, X, y, ck, out=tmp_path / "api", run_id="api", method="dropout",
                            settings=probe_settings(m["config"]["probe"], names), seed=m["probe_seed"])
    a, b = read_run(api), run
    pd.testing.assert_frame_equal(a.noise.reset_index(drop=True), b.noise.reset_index(drop=True))
    # reprobe_run switches the same layers off
    rp = reprobe_run(tmp_path / "logs" / res.ran[0], out=tmp_path / "re")
    r = json.loads((rp / "run.json").read_text())
    assert r["probe_dropout_disabled"] == ["drop0"]
    pd.testing.assert_frame_equal(read_run(rp).noise.reset_index(drop=True), b.noise.reset_index(drop=True))
