"""Collection end to end on tiny configs: log set validity, run.json, resume, workers, CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from _tiny_config import tiny_toml  # noqa: E402
from varprinciple.cli import main  # noqa: E402
from varprinciple.collect.api import reprobe_run  # noqa: E402
from varprinciple.collect.config import load_config  # noqa: E402
from varprinciple.collect.run import collect  # noqa: E402
from varprinciple.errors import ConfigError, VarPrincipleError  # noqa: E402
from varprinciple.io import read_logset, read_run  # noqa: E402

pytestmark = pytest.mark.torch

TABLES = ("eigen.parquet", "noise.parquet", "flatness.parquet", "exact_variance.parquet", "training.parquet")


def toml(**kw) -> str:
    """The shared tiny config (tests/_tiny_config.py), logged and probed every 10 steps."""
    return tiny_toml(log_every=10, every=10, **kw)


def tiny(tmp_path, name="c.toml", *, methods='["gd", "dropout"]', seeds="[0]", steps=20, lr=0.1):
    p = tmp_path / name
    p.write_text(toml(methods=methods, seeds=seeds, steps=steps, lr=lr))
    return load_config(p)


def tables_of(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for f in TABLES:
        t = pd.read_parquet(run_dir / f)
        out[f] = t.drop(columns=["elapsed_s"]) if "elapsed_s" in t else t
    return out


def assert_same_tables(a: Path, b: Path):
    ta, tb = tables_of(a), tables_of(b)
    for f in TABLES:
        pd.testing.assert_frame_equal(ta[f], tb[f], check_exact=True, obj=f)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    d = tmp_path_factory.mktemp("col")
    cfg = tiny(d)
    res = collect(cfg, d / "logs")
    return d, cfg, res


def test_log_set_and_run_json(collected):
    d, cfg, res = collected
    assert res.ran == ("gd-lr0.1-seed0", "dropout-lr0.1-drop0.1-seed0") and res.skipped == ()
    assert list(res.to_frame()["status"]) == ["ran", "ran"]
    ls = read_logset(d / "logs")
    assert sorted(r.run_id for r in ls.runs) == sorted(res.ran)
    run = next(r for r in ls.runs if r.method == "dropout")
    m = run.meta
    for key in ("schema_version", "run_id", "method", "group", "seed", "train_seed", "probe_seed", "dataset",
                "model", "loss", "n_params", "lr", "batch_size", "drop_prob", "keep_prob", "steps",
                "probe_batch_size", "probe_drop_prob", "data_split", "config", "config_hash", "versions",
                "git_revision", "checkpoints", "final"):
        assert key in m, key
    assert m["drop_prob"] == 0.1 and m["keep_prob"] == 0.9 and m["batch_size"] is None
    assert m["probe_batch_size"] == 8 and m["probe_drop_prob"] == 0.1 and m["probe_dropout_layers"] == ["drop0"]
    assert m["n_params"] == 64 * 4 + 4 + 4 * 10 + 10 and m["loss"] == "cross_entropy"
    assert m["data_split"]["n_train"] == 60 and m["data_split"]["n_test"] == 20
    assert m["config"]["train"]["method"] == "dropout" and m["config_source"].endswith("c.toml")
    assert m["versions"]["torch"] == torch.__version__.split("+")[0] or m["versions"]["torch"]
    assert m["probe_steps"] == [10, 20] and run.steps == [10, 20]
    assert sorted({b.source for b in run.blocks}) == ["dropout", "isotropic", "sgd"]
    curves = run.optional_table("training.parquet")
    assert list(curves["step"]) == [0, 10, 20]
    assert curves["train_loss"].iloc[-1] == pytest.approx(m["final"]["train_loss"])
    flat = run.optional_table("flatness.parquet")
    assert {"lambda_max", "hessian_trace", "rho"} <= set(flat["quantity"])
    gd = next(r for r in ls.runs if r.method == "gd")
    assert gd.meta["drop_prob"] is None and gd.meta["probe_drop_prob"] == 0.1
    assert "drop0:p_drop=0.0" in gd.meta["model"]


def test_checkpoints_load_weights_only_and_reprobe_reproduces(collected, tmp_path):
    d, cfg, res = collected
    run_dir = d / "logs" / "dropout-lr0.1-drop0.1-seed0"
    final = torch.load(run_dir / "model.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "step_20.pt", weights_only=True)
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    first = torch.load(run_dir / "checkpoints" / "step_10.pt", weights_only=True)
    assert not torch.equal(first["fc0.weight"], last["fc0.weight"])
    out = reprobe_run(run_dir, out=tmp_path / "re" / "again")
    again = read_run(out)
    assert again.meta["reprobed_from"] == str(run_dir) and again.meta["group"] == "dropout-lr0.1-drop0.1"
    for f in ("eigen.parquet", "noise.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / f), pd.read_parquet(out / f), check_exact=True)


def test_reprobe_errors(collected, tmp_path):
    d, _, _ = collected
    run_dir = d / "logs" / "gd-lr0.1-seed0"
    from varprinciple.errors import InputError
    with pytest.raises(InputError, match=r"no checkpoint for step\(s\) \[7\] \(saved: \[10, 20\]\)"):
        reprobe_run(run_dir, out=tmp_path / "x", steps=[7])
    with pytest.raises(InputError, match=r"cannot read run.json"):
        reprobe_run(tmp_path, out=tmp_path / "x")
    (tmp_path / "run.json").write_text('{"run_id": "x", "method": "sgd"}')
    with pytest.raises(InputError, match=r"run.json has no collect 'config'; use probe_checkpoints with your model"):
        reprobe_run(tmp_path, out=tmp_path / "x")


def test_resume_skips_finished_and_redoes_unfinished(tmp_path):
    cfg = tiny(tmp_path, methods='["gd"]', seeds="[0, 1, 2]", steps=10)
    logs = tmp_path / "logs"
    first = collect(cfg, logs)
    assert len(first.ran) == 3
    keep = logs / "gd-lr0.1-seed0"
    stamp = (keep / "run.json").stat().st_mtime_ns
    reference = tmp_path / "ref"
    shutil.copytree(logs / "gd-lr0.1-seed1", reference)
    # interruption 1: killed while writing seed1 -> a staging directory, no final run
    shutil.move(logs / "gd-lr0.1-seed1", logs / ".gd-lr0.1-seed1.partial")
    (logs / ".gd-lr0.1-seed1.partial" / "run.json").unlink()
    (logs / ".gd-lr0.1-seed1.partial" / "junk.tmp").write_text("half a file")
    # interruption 2: a run directory without run.json (e.g. written by an older tool)
    (logs / "gd-lr0.1-seed2" / "run.json").unlink()
    assert sorted(r.run_id for r in read_logset(logs, skip_invalid=True).runs) == ["gd-lr0.1-seed0"]
    again = collect(cfg, logs)
    assert again.skipped == ("gd-lr0.1-seed0",) and again.ran == ("gd-lr0.1-seed1", "gd-lr0.1-seed2")
    assert (keep / "run.json").stat().st_mtime_ns == stamp
    assert not any(p.name.endswith(".partial") for p in logs.iterdir())
    assert not (logs / "gd-lr0.1-seed1" / "junk.tmp").exists()
    assert_same_tables(reference, logs / "gd-lr0.1-seed1")  # the redone run equals the original
    third = collect(cfg, logs)
    assert third.ran == () and len(third.skipped) == 3
    # extending the sweep runs only the new configuration
    more = collect(tiny(tmp_path, "c2.toml", methods='["gd"]', seeds="[3, 0, 1, 2]", steps=10), logs)
    assert more.ran == ("gd-lr0.1-seed3",) and len(more.skipped) == 3


def test_changed_config_is_refused(tmp_path):
    logs = tmp_path / "logs"
    collect(tiny(tmp_path, methods='["gd"]', steps=10), logs)
    with pytest.raises(ConfigError, match=r"gd-lr0.1-seed0: a finished run of this name was made with a "
                                          r"different configuration .* collect into another --out or delete it"):
        collect(tiny(tmp_path, "c2.toml", methods='["gd"]', steps=12), logs)


def test_failed_run_leaves_nothing_that_looks_complete(tmp_path):
    logs = tmp_path / "logs"
    with pytest.raises(VarPrincipleError, match=r"^run gd-lr1e\+20-seed0 failed: training diverged at step"):
        collect(tiny(tmp_path, methods='["gd"]', steps=10, lr=1e20), logs)
    assert not (logs / "gd-lr1e+20-seed0").exists()
    assert list(logs.iterdir()) == []  # the failed attempt deleted its own staging directory
    with pytest.raises(Exception, match=r"no run found"):
        read_logset(logs)


def test_preflight_errors_before_training(tmp_path):
    p = tmp_path / "big.toml"
    p.write_text(toml(methods='["sgd"]', seeds="[0]", steps=5).replace("batch_size = 8",
                                                                                       "batch_size = 60"))
    with pytest.raises(ConfigError, match=r"^\[train\] batch_size: must be < the number of training samples "
                                          r"\(60\); got 60$"):
        collect(load_config(p), tmp_path / "logs")
    assert not (tmp_path / "logs").exists()
    p.write_text(toml(methods='["gd"]', seeds="[0]", steps=5).replace("top_k = 3", "top_k = 400"))
    with pytest.raises(ConfigError, match=r"^\[probe\] top_k: must be <= the number of parameters \(310\); got 400$"):
        collect(load_config(p), tmp_path / "logs")
    p.write_text(toml(methods='["gd"]', seeds="[0]", steps=5).replace("[probe]",
                                                                                       "[probe]\nbatch_size = 61"))
    with pytest.raises(ConfigError, match=r"^\[probe\] batch_size: must be < the number of training samples "
                                          r"\(60\); got 61$"):
        collect(load_config(p), tmp_path / "logs")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "reg.npz", X=rng.normal(size=(30, 2)), y=rng.normal(size=30))
    p.write_text('[data]\nname = "npz"\npath = "reg.npz"\n[model]\nwidths = [3]\n[train]\nmethod = "gd"\n'
                 'loss = "cross_entropy"\nsteps = 2\n[probe]\ntop_k = 2\nn_samples = 5\nbatch_size = 4\n'
                 'tr_hc_samples = 0\nhutchinson_probes = 2\n')
    with pytest.raises(ConfigError, match=r"^\[train\] loss: 'cross_entropy' needs class labels; the data are a "
                                          r"regression task \(use 'mse'\)$"):
        collect(load_config(p), tmp_path / "logs")
    assert not (tmp_path / "logs").exists()
    with pytest.raises(ConfigError, match=r"^--workers: must be an integer >= 1; got 0$"):
        collect(tiny(tmp_path), tmp_path / "logs", workers=0)
    with pytest.raises(ConfigError, match=r"^--threads: must be an integer >= 1; got 0$"):
        collect(tiny(tmp_path), tmp_path / "logs", threads=0)
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ConfigError, match=r"is a file; expected a directory"):
        collect(tiny(tmp_path), f)


def test_dropout_method_without_training_dropout_layers_is_refused(tmp_path):
    # validation refuses `[model] dropout_layers = []`; the build step refuses it too when a
    # resolved configuration bypasses validation (a dropout run must really train with dropout)
    from varprinciple.collect.run import build_run, expand_sweep
    spec = expand_sweep(tiny(tmp_path, methods='["dropout"]'))[0]
    spec.config["model"]["dropout_layers"] = []
    with pytest.raises(ConfigError, match=r"^\[model\] dropout_layers: method 'dropout' needs at least one "
                                          r"dropout layer in the model; got \[\]$"):
        build_run(spec, str(tmp_path), "cpu")


@pytest.mark.slow
def test_results_independent_of_worker_count_and_reproducible(tmp_path, collected):
    d, cfg, _ = collected
    res = collect(cfg, tmp_path / "w2", workers=2)
    assert sorted(res.ran) == sorted(["gd-lr0.1-seed0", "dropout-lr0.1-drop0.1-seed0"])
    for rid in res.ran:
        assert_same_tables(d / "logs" / rid, tmp_path / "w2" / rid)
        a = json.loads((d / "logs" / rid / "run.json").read_text())
        b = json.loads((tmp_path / "w2" / rid / "run.json").read_text())
        assert (a["train_seed"], a["probe_seed"], a["config_hash"]) == (b["train_seed"], b["probe_seed"],
                                                                       b["config_hash"])
    # the two runs of the sweep are not copies of one another
    noise = [pd.read_parquet(tmp_path / "w2" / r / "noise.parquet")["value"].to_numpy() for r in res.ran]
    assert not np.array_equal(noise[0], noise[1])


def test_cli_collect(tmp_path, capsys):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(toml(methods='["gd"]', seeds="[0]", steps=10))
    assert main(["collect", str(cfg_path), "--out", str(tmp_path / "logs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "valid; 1 run:" in out and "gd-lr0.1-seed0" in out
    assert not (tmp_path / "logs").exists()
    assert main(["-q", "collect", str(cfg_path), "--out", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "collect: 1 run written, 0 finished runs skipped" in out and str(tmp_path / "logs") in out
    assert main(["-q", "collect", str(cfg_path), "--out", str(tmp_path / "logs")]) == 0
    assert "0 runs written, 1 finished run skipped" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = -1\n")
    assert main(["collect", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"varprinciple: error: {bad}: [train] lr: must be > 0; got -1"
    assert os.listdir(tmp_path / "logs") == ["gd-lr0.1-seed0"]


@pytest.mark.parametrize("device, match", [
    ("foo", r"^--device: not a torch device \(cpu, cuda, cuda:N, mps\); got 'foo'$"),
    ("cuda:99", r"^--device: 'cuda:99' is not available \("),
    pytest.param("cuda", r"^--device: 'cuda' is not available \(no CUDA device; use cpu\)$",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")),
    pytest.param("mps", r"^--device: 'mps' is not available \(no MPS device; use cpu\)$",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available")),
    ("meta", r"^--device: must be cpu, cuda, cuda:N or mps; got 'meta'$"),
])
def test_bad_device_is_refused_before_preflight_and_output(tmp_path, capsys, device, match):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(toml(methods='["gd"]', seeds="[0]", steps=5))
    with pytest.raises(ConfigError, match=match):
        collect(load_config(cfg_path), tmp_path / "logs", device=device)
    assert main(["collect", str(cfg_path), "--out", str(tmp_path / "logs"), "--device", device]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("varprinciple: error: --device: ") and "\n" not in err
    assert not (tmp_path / "logs").exists()  # no .partial directory, nothing written


@pytest.mark.parametrize("data, model", [
    ('name = "digits"\nn_train = 40\nn_test = 10', 'arch = "cnn"\nchannels = [2, 3]'),
    ('name = "teacher_student"\nn_samples = 50\nn_features = 3', 'widths = [4]\nactivation = "tanh"'),
    ('name = "function_1d"\nn_samples = 50', 'widths = [6]\ndropout_layers = [0]'),
    ('name = "mnist1d"\nn_samples = 100\nn_train = 50', 'arch = "linear"'),
], ids=["digits-cnn", "teacher-student-mse", "function-1d-mse", "mnist1d-linear"])
def test_sources_and_architectures_end_to_end(tmp_path, data, model):
    sources = '["sgd", "isotropic"]' if "linear" in model else '["sgd", "dropout", "isotropic"]'
    methods = '["sgd"]' if "linear" in model else '["sgd+dropout"]'
    p = tmp_path / "c.toml"
    p.write_text(f"[data]\n{data}\n[model]\n{model}\n[train]\nmethod = {methods}\nsteps = 6\nbatch_size = 8\n"
                 f"log_every = 3\nlr = 0.05\n[probe]\ntop_k = 2\nn_samples = 8\nn_random = 1\nsources = {sources}\n"
                 f"hutchinson_probes = 2\ntr_hc_samples = 3\n")
    res = collect(load_config(p), tmp_path / "logs")
    run = read_run(tmp_path / "logs" / res.ran[0])
    regression = "mnist1d" not in data and "digits" not in data
    assert run.meta["loss"] == ("mse" if regression else "cross_entropy")
    assert sorted({b.source for b in run.blocks}) == sorted(sources.strip("[]").replace('"', "").split(", "))
    curves = run.optional_table("training.parquet")
    assert curves["train_accuracy"].isna().all() == regression


def test_progress_bars_do_not_change_results(tmp_path, capsys):
    cfg = tiny(tmp_path, methods='["gd", "sgd"]', steps=10)
    quiet = collect(cfg, tmp_path / "a", progress=False)
    bars = collect(cfg, tmp_path / "b", progress=True)
    assert quiet.ran == bars.ran
    assert "runs" in capsys.readouterr().err  # the tqdm bar over runs
    for rid in bars.ran:
        assert_same_tables(tmp_path / "a" / rid, tmp_path / "b" / rid)


def test_reprobe_threads_must_be_a_positive_integer(collected, tmp_path):
    d, _cfg, _res = collected
    with pytest.raises(VarPrincipleError, match="`threads` must be an integer >= 1; got 0"):
        reprobe_run(d / "logs" / "gd-lr0.1-seed0", out=tmp_path / "x", threads=0)


def test_a_run_from_an_older_version_with_the_same_settings_is_kept(tmp_path):
    """Keys a newer varprinciple added, at their defaults, do not make an old run 'different'."""
    logs = tmp_path / "logs"
    collect(tiny(tmp_path, methods='["gd"]', steps=10), logs)
    rj = logs / "gd-lr0.1-seed0" / "run.json"
    meta = json.loads(rj.read_text())
    # as an older version wrote it: without [probe] blocks and [train] seed_scheme, another hash
    del meta["config"]["probe"]["blocks"], meta["config"]["train"]["seed_scheme"]
    meta["config_hash"] = "0123456789abcdef"
    rj.write_text(json.dumps(meta))
    again = collect(tiny(tmp_path, methods='["gd"]', steps=10), logs)
    assert again.ran == () and again.skipped == ("gd-lr0.1-seed0",)
    # a key the old run lacks but the new config sets away from its default: a different run
    p = tmp_path / "matched.toml"
    p.write_text(toml(methods='["gd"]', seeds="[0]", steps=10).replace(
        "log_every = 10", 'log_every = 10\nseed_scheme = "matched"'))
    with pytest.raises(ConfigError, match="different configuration"):
        collect(load_config(p), logs)


def test_a_reprobe_of_a_checkpoint_counts_as_the_same_network(collected, tmp_path):
    """collect and reprobe_run write the probed network's fingerprint; test counts it once."""
    from varprinciple.stats import analyze
    d, _cfg, _res = collected
    run_dir = d / "logs" / "gd-lr0.1-seed0"
    fp = json.loads((run_dir / "run.json").read_text())["checkpoint_fingerprint"]
    assert set(fp) == {"10", "20"} and len(set(fp.values())) == 2
    logs = tmp_path / "logs"
    shutil.copytree(run_dir, logs / "gd-lr0.1-seed0")
    # fresh noise (another K): only the fingerprint says it is the same network
    from varprinciple.collect.run import probe_settings
    p = dict(json.loads((run_dir / "run.json").read_text())["config"]["probe"], n_samples=15)
    reprobe_run(run_dir, out=logs / "again", run_id="gd-again", settings=probe_settings(p, ["drop0"]))
    again = json.loads((logs / "again" / "run.json").read_text())
    assert again["checkpoint_fingerprint"] == fp
    res = analyze(logs, resamples=0)
    g = res.groups[res.groups["source"] == "sgd"].iloc[0]
    assert g["n_runs"] == 1 and g["n_runs_total"] == 2
    assert any("one network" in n for n in res.notes)


def test_independent_sampler_and_random_walk_control_end_to_end(tmp_path):
    from varprinciple.collect.run import expand_sweep
    base = toml(methods='["sgd"]', seeds="[0]", steps=20)
    plain = tmp_path / "plain.toml"
    plain.write_text(base)
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(base.replace("log_every = 10", 'log_every = 10\nsampler = "epochs"'))
    walk = tmp_path / "walk.toml"
    walk.write_text(base.replace("log_every = 10", 'log_every = 10\nsampler = "independent"')
                    + '\n[trajectory]\nwindow = 40\nevery = 2\nn_components = 3\nprofile_points = 3\n'
                      'dynamics = "random_walk"\n')
    s_plain, s_explicit, s_walk = (expand_sweep(load_config(p))[0] for p in (plain, explicit, walk))
    # the default sampler moves no seed (older log sets keep theirs); another sampler is another run
    assert (s_plain.train_seed, s_plain.probe_seed) == (s_explicit.train_seed, s_explicit.probe_seed)
    assert s_walk.train_seed != s_plain.train_seed
    collect(load_config(walk), tmp_path / "logs")
    meta = json.loads((tmp_path / "logs" / s_walk.run_id / "run.json").read_text())
    assert meta["sampler"] == "independent" and meta["hyperparameters"]["sampler"] == "independent"
    assert meta["trajectory"]["dynamics"] == "random_walk" and meta["trajectory"]["walk_sd"] > 0
    assert len(pd.read_parquet(tmp_path / "logs" / s_walk.run_id / "trajectory.parquet")) == 3
    # the walk's default step needs B < n: refused before any training
    bad = tmp_path / "bad.toml"
    bad.write_text(walk.read_text().replace('method = ["sgd"]', 'method = ["gd"]')
                   .replace("batch_size = 8", "batch_size = 60")
                   .replace("[probe]", '[probe]\nsources = ["dropout"]'))
    with pytest.raises(ConfigError,
                       match=r"\[trajectory\] walk_sd: the default matches the SGD noise of batch size 60"):
        collect(load_config(bad), tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").glob("*/run.json"))
