"""Recording from inside a training loop: the Recorder, the Lightning callback and the Hugging Face
TrainerCallback write log sets that `varprinciple test` reads (examples/record_loop.py,
record_lightning.py and record_hf_trainer.py run here; the real Trainer needs accelerate, in the hf and test extras)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from varprinciple.cli import main  # noqa: E402
from varprinciple.collect.recorder import Recorder  # noqa: E402
from varprinciple.errors import InputError  # noqa: E402
from varprinciple.io import read_logset, read_run  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tables(run):
    r = read_run(run)
    return r.eigen.drop(columns=["vector"], errors="ignore"), r.noise


def _check_log_set(logdir, tmp_path, n_runs, kinds=("module",)):
    ls = read_logset(logdir)
    assert len(ls.runs) == n_runs
    for run in ls.runs:
        m = run.meta
        assert m["probe_steps"] == [10, 20, 30] and sorted(m["checkpoint_fingerprint"]) == ["10", "20", "30"]
        assert len(set(m["checkpoint_fingerprint"].values())) == 3  # the network moved between probes
        assert m["recorder"] == {"every": 10} and len(m["checkpoints"]) == 3
        assert all((run.path / c).exists() for c in m["checkpoints"])
        assert [s["kind"] for s in m["dropout_sites"]] == list(kinds)
    out = tmp_path / "results.json"
    assert main(["test", str(logdir), "--json", str(out), "--resamples", "0", "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert {r["run_id"] for r in res["relations"]} == {r.run_id for r in ls.runs}


def test_plain_loop_recorder_writes_a_log_set_that_test_reads(tmp_path):
    ex = _example("record_loop")
    for s in (0, 1):
        ex.train(tmp_path / "logs", seed=s)
    _check_log_set(tmp_path / "logs", tmp_path, 2)


def test_recorder_resumes_an_interrupted_recording(tmp_path):
    ex = _example("record_loop")
    ex.train(tmp_path / "a", seed=0)                       # uninterrupted
    rec, _ = ex.train(tmp_path / "b", seed=0, stop_after=20)  # killed after step 20
    assert rec.steps == [10, 20]
    # the resumed job re-runs its loop from a checkpoint of its own; here: the same loop again,
    # whose steps 10 and 20 are already recorded (skipped) and step 30 is new
    rec2, _ = ex.train(tmp_path / "b", seed=0)
    assert rec2.steps == [10, 20, 30]
    for ta, tb in zip(_tables(tmp_path / "a" / "loop-seed0"), _tables(tmp_path / "b" / "loop-seed0")):
        pd.testing.assert_frame_equal(ta, tb)
    fa = json.loads((tmp_path / "a" / "loop-seed0" / "run.json").read_text())["checkpoint_fingerprint"]
    fb = json.loads((tmp_path / "b" / "loop-seed0" / "run.json").read_text())["checkpoint_fingerprint"]
    assert fa == fb
    # a recording is not mixed with other settings, nor written over a run it did not record
    with pytest.raises(InputError, match=r"holds a recording with another 'every'; use another `out`"):
        Recorder(torch.nn.Linear(64, 10), "cross_entropy", *ex.digits(), out=tmp_path / "b" / "loop-seed0",
                 every=5, run_id="loop-seed0", method="sgd+dropout", settings=ex.SETTINGS)
    with pytest.raises(InputError, match=r"`every` must be an integer >= 1; got 0"):
        Recorder(torch.nn.Linear(64, 10), "cross_entropy", *ex.digits(), out=tmp_path / "c", every=0)


def test_lightning_callback_writes_a_log_set_that_test_reads(tmp_path):
    pytest.importorskip("lightning")
    ex = _example("record_lightning")
    ex.fit(tmp_path / "logs", seed=0)
    _check_log_set(tmp_path / "logs", tmp_path, 1)


def test_hf_trainer_callback_writes_a_log_set_that_test_reads(tmp_path):
    pytest.importorskip("transformers")
    ex = _example("record_hf_trainer")
    rec = ex.train_manually(tmp_path / "logs", seed=0)
    assert rec.steps == [10, 20, 30]
    _check_log_set(tmp_path / "logs", tmp_path, 1, kinds=["module", "attention", "module", "module", "module"])


def test_hf_trainer_example_with_the_real_trainer(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer's own requirement
    ex = _example("record_hf_trainer")
    ex.fit(tmp_path / "logs", seed=0)
    _check_log_set(tmp_path / "logs", tmp_path, 1, kinds=["module", "attention", "module", "module", "module"])
