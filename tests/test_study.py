"""The main job: `varprinciple study` collects and tests; the packaged configs are valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from varprinciple.cli import main  # noqa: E402
from varprinciple.collect.config import default_study_path, load_config  # noqa: E402
from varprinciple.collect.run import expand_sweep  # noqa: E402
from varprinciple.collect.study import default_study_fixed_steps_path, run_study  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.torch

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))

MINI = """
[data]
n_train = 80
n_test = 20
[model]
widths = [5]
[train]
method = ["gd", "sgd", "dropout"]
seed = [0, 1, 2]
steps = 40
lr = 0.2
batch_size = 8
log_every = 20
[probe]
top_k = 4
n_samples = 30
n_random = 3
hutchinson_probes = 4
tr_hc_samples = 5
"""


def test_default_study_is_packaged_and_valid():
    p = default_study_path()
    assert p.is_file() and p.name == "default_study.toml"
    specs = expand_sweep(load_config(p))
    assert [s.run_id for s in specs][:2] == ["gd-lr0.1-seed0", "gd-lr0.1-seed1"]
    assert {s.config["data"]["name"] for s in specs} == {"digits"}
    # matched loss by construction: every run stops at one common training loss
    assert {s.config["train"]["target_loss"] for s in specs} == {0.005}


def test_fixed_step_variant_is_packaged_and_differs_only_in_the_stop_rule():
    fixed = expand_sweep(load_config(default_study_fixed_steps_path()))
    matched = expand_sweep(load_config(default_study_path()))
    assert [s.run_id for s in fixed] == [s.run_id for s in matched]
    assert {s.config["train"]["target_loss"] for s in fixed} == {None}
    assert {s.config["train"]["steps"] for s in fixed} == {1500}
    for f, m in zip(fixed, matched):  # same data, model, probes, seeds
        assert f.config["probe"] == m.config["probe"] and f.config["model"] == m.config["model"]
    with pytest.raises(ConfigError, match="cannot be combined"):
        run_study("x", config=default_study_path(), fixed_steps=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path):
    assert expand_sweep(load_config(path))


def test_study_collects_tests_and_prints_paths(tmp_path, capsys):
    cfg = tmp_path / "mini.toml"
    cfg.write_text(MINI)
    res = run_study(tmp_path / "s", config=cfg, workers=1)
    assert res.logs == tmp_path / "s" / "logs" and len(res.collected.run_ids) == 9
    results = json.loads(res.results.read_text())
    assert results["schema_version"] == 1
    groups = {(g["group"]["label"] if isinstance(g["group"], dict) and "label" in g["group"] else str(g["group"]),
               g["source"]) for g in results["groups"]}
    assert len(groups) == 9  # 3 methods x 3 noise sources
    assert res.directions.exists() and "Groups" in res.summary
    # the CLI resumes (all runs finished) and prints the same paths
    assert main(["-q", "study", "--config", str(cfg), "--out", str(tmp_path / "s"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"log set: {tmp_path / 's' / 'logs'}" in out and f"results: {tmp_path / 's' / 'results.json'}" in out
    assert "varprinciple test:" in out
    # the first screen: the findings block, before the detailed tables
    assert out.lstrip().startswith("Findings (") and out.index("Findings (") < out.index("varprinciple test:")
    assert "b of SGD noise" in out and "→" in out
