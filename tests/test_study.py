"""The main job: `varprinciple study` collects and tests; the packaged configs are valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from varprinciple.cli import main  # noqa: E402
from varprinciple.collect.config import default_study_path, load_config  # noqa: E402
from varprinciple.collect.run import expand_sweep  # noqa: E402
from varprinciple.collect.study import run_study  # noqa: E402

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
