"""Collection config: validation errors name the key, sweeps expand, seeds are stable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from varprinciple.collect.config import (CONFIG_KEYS, config_reference, default_study_path, load_config,
                                         validate_config)
from varprinciple.collect.run import derive_seed, expand_sweep
from varprinciple.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "collection.md"


@pytest.mark.parametrize("raw, match", [
    ({"train": {"lr": -1}}, r"^\[train\] lr: must be > 0; got -1$"),
    ({"train": {"lrr": 0.1}}, r"^\[train\] lrr: unknown key; did you mean 'lr'\?$"),
    ({"trian": {"lr": 0.1}}, r"^\[trian\]: unknown section; did you mean \[train\]\?$"),
    ({"zzz": {}}, r"^\[zzz\]: unknown section; valid sections: \[data\]"),
    ({"train": {"qqqq": 1}}, r"^\[train\] qqqq: unknown key; valid keys: "),
    ({"train": {"steps": "many"}}, r"^\[train\] steps: must be an integer; got 'many'$"),
    ({"train": {"steps": 1.5}}, r"^\[train\] steps: must be an integer; got 1.5$"),
    ({"train": {"steps": True}}, r"^\[train\] steps: must be an integer; got true$"),
    ({"train": {"lr": "fast"}}, r"^\[train\] lr: must be a number; got 'fast'$"),
    ({"train": {"lr": float("inf")}}, r"^\[train\] lr: must be finite; got inf$"),
    ({"train": {"lr": [0.1, -0.2]}}, r"^\[train\] lr\[1\]: must be > 0; got -0.2$"),
    ({"train": {"lr": []}}, r"^\[train\] lr: an empty list"),
    ({"train": {"seed": [0, 0]}}, r"^\[train\] seed: duplicate values in \[0, 0\]$"),
    ({"train": {"method": "adam"}}, r"^\[train\] method: must be one of 'gd', 'sgd', 'dropout', 'sgd\+dropout'"),
    ({"train": {"method": "sdg"}}, r"^\[train\] method: must be one of 'gd', 'sgd', 'dropout', 'sgd\+dropout'; "
                                   r"got 'sdg' \(did you mean 'sgd'\?\)$"),
    ({"train": {"drop_prob": 1.0}}, r"^\[train\] drop_prob: must be < 1; got 1.0$"),
    ({"train": {"drop_prob": 0}}, r"^\[train\] drop_prob: must be > 0; got 0$"),
    ({"train": {"checkpoints": 1}}, r"^\[train\] checkpoints: must be true or false; got 1$"),
    ({"data": {"name": 3}}, r"^\[data\] name: must be a string; got 3$"),
    ({"data": {"test_fraction": 1.0}}, r"^\[data\] test_fraction: must be < 1; got 1.0$"),
    ({"data": {"n_train": 1}}, r"^\[data\] n_train: must be >= 2; got 1$"),
    ({"data": {"name": "npz"}}, r"^\[data\] path: required for name = 'npz'$"),
    ({"model": {"widths": 50}}, r"^\[model\] widths: must be a list; got 50$"),
    ({"model": {"widths": [50, 0]}}, r"^\[model\] widths\[1\]: must be >= 1; got 0$"),
    ({"model": {"widths": []}}, r"^\[model\] widths: an mlp needs at least one hidden layer"),
    ({"model": {"arch": "cnn", "channels": []}}, r"^\[model\] channels: a cnn needs at least one conv block"),
    ({"model": {"dropout_layers": [2]}}, r"^\[model\] dropout_layers: layer 2 does not exist; the mlp has 2 hidden"),
    ({"model": {"dropout_layers": [0, 0]}}, r"^\[model\] dropout_layers: duplicate values"),
    ({"model": {"dropout_layers": []}, "train": {"method": "dropout"}},
     r"^\[model\] dropout_layers: give at least one layer \(or omit the key\)$"),
    ({"probe": {"dropout_layers": []}}, r"^\[probe\] dropout_layers: give at least one layer \(or omit the key\)$"),
    ({"probe": {"dropout_layers": [5]}}, r"^\[probe\] dropout_layers: layer 5 does not exist"),
    ({"model": {"arch": "cnn"}, "data": {"name": "mnist1d"}}, r"^\[model\] arch: 'cnn' needs image data"),
    ({"model": {"arch": "linear"}, "train": {"method": ["gd", "dropout"]}},
     r"^\[train\] method: 'dropout' needs hidden layers; arch 'linear' has none$"),
    ({"model": {"arch": "linear"}, "probe": {"sources": ["sgd", "dropout"]}},
     r"^\[probe\] sources: 'dropout' needs hidden layers"),
    ({"train": {"steps": 10, "epochs": 2}}, r"^\[train\] epochs: give either steps or epochs, not both$"),
    ({"data": {"name": "teacher_student"}, "train": {"loss": "cross_entropy"}},
     r"^\[train\] loss: 'cross_entropy' needs class labels"),
    ({"probe": {"sources": []}}, r"^\[probe\] sources: give at least one noise source$"),
    ({"train": {"method": ["gd", "sgd"], "batch_size": [16, 32]}},
     r"^\[probe\] batch_size: required when \[train\] batch_size lists several values \(\[16, 32\]\), so "
     r"that the probe B of gd runs does not depend on the list$"),
    ({"train": {"method": ["gd", "dropout"], "drop_prob": [0.1, 0.3]}},
     r"^\[probe\] drop_prob: required when \[train\] drop_prob lists several values \(\[0.1, 0.3\]\) and some "
     r"methods train without dropout"),
    ({"probe": {"sources": ["dropout", "isotropic"]}}, r"^\[probe\] isotropic_of: 'sgd' is not among the sources"),
    ({"probe": {"sources": ["sgd", "sgd"]}}, r"^\[probe\] sources: duplicate values"),
    ({"probe": {"sources": ["sgd", "adam"]}}, r"^\[probe\] sources\[1\]: must be one of"),
    ({"probe": {"tr_hc_samples": 2}}, r"^\[probe\] tr_hc_samples: must be 0 or in \[3, n_samples = 1000\]; got 2$"),
    ({"probe": {"hutchinson_probes": 1}}, r"^\[probe\] hutchinson_probes: must be >= 2; got 1$"),
    ({"probe": {"eig_tol": 0}}, r"^\[probe\] eig_tol: must be > 0; got 0$"),
    ({"train": "fast"}, r"^\[train\]: must be a table of keys; got 'fast'$"),
])
def test_config_errors_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(raw)


def test_config_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^config: must be a table of sections; got list$"):
        validate_config([1, 2])


def test_defaults_filled_and_scalars_become_sweep_lists():
    cfg = validate_config({"train": {"lr": 0.05}})
    assert cfg["train"]["lr"] == [0.05]
    assert cfg["train"]["method"] == ["sgd"]
    assert cfg["train"]["steps"] is None
    assert cfg["model"]["widths"] == [50, 50]
    assert cfg["probe"]["sources"] == ["sgd", "dropout", "isotropic"]
    assert set(cfg.to_dict()) == set(CONFIG_KEYS)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read the config"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[train]\nlr = -1\n")
    with pytest.raises(ConfigError, match=r"wrong.toml: \[train\] lr: must be > 0; got -1$"):
        load_config(wrong)


def test_default_study_config():
    cfg = load_config(default_study_path())
    specs = expand_sweep(cfg)
    assert len(specs) == 15
    assert sorted({s.method for s in specs}) == ["dropout", "gd", "sgd"]
    assert sorted({s.seed for s in specs}) == [0, 1, 2, 3, 4]
    assert all(s.config["probe"]["sources"] == ["sgd", "dropout", "isotropic"] for s in specs)


def test_sweep_expansion_names_and_irrelevant_keys():
    cfg = validate_config({"train": {"method": ["gd", "sgd", "dropout", "sgd+dropout"], "seed": [0, 1],
                                     "batch_size": [16, 32], "drop_prob": [0.1, 0.5], "lr": [0.1, 0.01]},
                           "probe": {"batch_size": 16, "drop_prob": 0.1}})
    specs = expand_sweep(cfg)
    # gd: lr x seed; sgd: lr x B x seed; dropout: lr x p x seed; sgd+dropout: lr x B x p x seed
    assert len(specs) == 4 + 8 + 8 + 16
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids)
    assert "sgd+dropout-lr0.01-bs32-drop0.5-seed1" in ids
    gd = [s for s in specs if s.method == "gd"]
    assert all(s.config["train"]["batch_size"] is None and s.config["train"]["drop_prob"] is None for s in gd)
    # runs trained without dropout/minibatches still get the probes' B and drop probability
    assert all(s.config["probe"]["batch_size"] == 16 and s.config["probe"]["drop_prob"] == 0.1 for s in gd)
    sgd32 = next(s for s in specs if s.run_id == "sgd-lr0.1-bs32-seed0")
    assert sgd32.config["train"]["batch_size"] == 32 and sgd32.config["probe"]["batch_size"] == 16
    # a single [train] batch_size is every run's default probe B (gd runs included)
    one = expand_sweep(validate_config({"train": {"method": ["gd", "sgd"], "batch_size": 64}}))
    assert [s.config["probe"]["batch_size"] for s in one] == [64, 64]
    assert sgd32.group == "sgd-lr0.1-bs32"
    assert all(s.config["train"]["steps"] == 1000 for s in specs)


def test_extending_a_sweep_changes_no_existing_run():
    small = expand_sweep(validate_config({"train": {"method": ["gd", "sgd"], "seed": [0, 1]}}))
    # a second batch size needs an explicit probe B; the old single value keeps old runs as they were
    big = expand_sweep(validate_config({"train": {"method": ["sgd", "gd", "dropout"], "seed": [2, 0, 1],
                                                  "batch_size": [64, 32]}, "probe": {"batch_size": 32}}))
    by_id = {s.run_id: s for s in big}
    for s in small:
        t = by_id[s.run_id]
        assert (t.train_seed, t.probe_seed, t.config_hash, t.config) == \
            (s.train_seed, s.probe_seed, s.config_hash, s.config)


def test_seeds_depend_on_the_configuration():
    a, b = expand_sweep(validate_config({"train": {"seed": [0, 1]}}))
    assert a.train_seed != b.train_seed and a.probe_seed != b.probe_seed
    # a probe setting changes the probe seed but not the training seed
    c = expand_sweep(validate_config({"train": {"seed": 0}, "probe": {"top_k": 5}}))[0]
    assert c.train_seed == a.train_seed and c.probe_seed != a.probe_seed
    d = expand_sweep(validate_config({"train": {"seed": 0, "lr": 0.2}}))[0]
    assert d.train_seed != a.train_seed
    # bookkeeping keys (log_every, checkpoints) do not change the training seed
    for extra in ({"log_every": 7}, {"checkpoints": False}):
        e = expand_sweep(validate_config({"train": {"seed": 0, **extra}}))[0]
        assert e.train_seed == a.train_seed and e.config_hash != a.config_hash
    assert derive_seed("x", 1) == derive_seed("x", 1) < 2**63


def test_docs_list_every_config_key():
    text = DOCS.read_text()
    ref = config_reference()
    for sec, keys in CONFIG_KEYS.items():
        assert f"### [{sec}]" in text
        for k in keys:
            assert re.search(rf"^\| `{re.escape(k)}` \|", text, re.M), f"[{sec}] {k} not documented"
    # the generated reference is pasted verbatim in the docs
    assert ref.strip() in text


def test_docs_toml_examples_are_valid():
    import tomllib
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert blocks
    for b in blocks:
        assert expand_sweep(validate_config(tomllib.loads(b)))
