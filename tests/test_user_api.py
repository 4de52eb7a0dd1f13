"""The user-model API: the documented example runs; checkpoints load weights-only; errors."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect.api import load_checkpoint, probe_checkpoints, probe_model  # noqa: E402
from varprinciple.collect.probe import ProbeSettings  # noqa: E402
from varprinciple.errors import DuplicateRunWarning, InputError  # noqa: E402
from varprinciple.io import read_logset, read_run  # noqa: E402

pytestmark = pytest.mark.torch

DOCS = Path(__file__).resolve().parents[1] / "docs" / "collection.md"
SMALL = ProbeSettings(top_k=3, n_samples=20, batch_size=8, n_random=2, sources=("sgd", "isotropic"),
                      hutchinson_probes=4, tr_hc_samples=5)


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    found = [b for b in blocks if b.startswith("# example: user-model API")]
    assert len(found) == 1
    return found[0]


def test_documented_example_runs(capsys):
    exec(compile(doc_example(), str(DOCS), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out.splitlines()
    assert out == ["['mine-final', 'mine-trajectory']", "[0, 50, 100]"]


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=g)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(40, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    return model, X, y


def test_probe_model_from_checkpoint_and_meta(data, tmp_path):
    model, X, y = data
    ck = tmp_path / "w.pt"
    trained = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    torch.save(trained.state_dict(), ck)
    out = probe_model(model, "mse", X.numpy(), y.numpy(), out=tmp_path / "logs" / "a", run_id="a", method="gd",
                      settings=SMALL, step=7, seed=3, checkpoint=ck, meta={"dataset": "toy", "lr": 0.1})
    run = read_run(out)
    assert run.meta["dataset"] == "toy" and run.meta["probe_steps"] == [7] and run.meta["n_params"] == 21
    assert run.meta["probe_settings"]["top_k"] == 3 and run.meta["probe_batch_size"] == 8
    assert run.meta["probes"][0]["checkpoint"] == str(ck)
    # the caller's model is untouched; probing `trained` directly gives the same tables
    assert not torch.equal(model[0].weight, trained[0].weight)
    direct = probe_model(trained, "mse", X, y, out=tmp_path / "logs" / "b", run_id="b", method="gd",
                         settings=SMALL, step=7, seed=3)
    for f in ("eigen.parquet", "noise.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f), pd.read_parquet(direct / f))
    with pytest.warns(DuplicateRunWarning, match=r"runs a, b have identical noise tables"):
        assert len(read_logset(tmp_path / "logs").runs) == 2


def test_probe_checkpoints_steps(data, tmp_path):
    model, X, y = data
    paths = {}
    for s in (0, 5):
        paths[s] = tmp_path / f"s{s}.pt"
        torch.save(model.state_dict(), paths[s])
        with torch.no_grad():
            model[0].weight.mul_(1.5)
    out = probe_checkpoints(model, "mse", X, y, paths, out=tmp_path / "r", run_id="r", method="sgd",
                            settings=SMALL)
    run = read_run(out)
    assert run.steps == [0, 5]
    lam = run.eigen.groupby("step")["eigenvalue"].max()
    assert lam[0] != lam[5]


def test_api_errors(data, tmp_path):
    model, X, y = data
    kw = dict(out=tmp_path / "r", run_id="r", method="gd", settings=SMALL)
    with pytest.raises(InputError, match=r"`model` must be a torch.nn.Module; got str"):
        probe_model("model", "mse", X, y, **kw)
    with pytest.raises(InputError, match=r"`X` has 40 rows but `y` has 39"):
        probe_model(model, "mse", X, y[:-1], **kw)
    with pytest.raises(InputError, match=r"`X` must be a torch.Tensor, numpy array or NpyRows; got list"):
        probe_model(model, "mse", [1, 2], y, **kw)
    with pytest.raises(InputError, match=r"`run_id` must be a non-empty string; got ''"):
        probe_model(model, "mse", X, y, **{**kw, "run_id": ""})
    with pytest.raises(InputError, match=r"`method` must be a non-empty string"):
        probe_model(model, "mse", X, y, **{**kw, "method": None})
    with pytest.raises(InputError, match=r"`meta` must not set 'run_id'; pass it as an argument"):
        probe_model(model, "mse", X, y, **kw, meta={"run_id": "x"})
    with pytest.raises(InputError, match=r"`meta` must be a mapping; got list"):
        probe_model(model, "mse", X, y, **kw, meta=[1])
    with pytest.raises(InputError, match=r"`step` must be an integer >= 0; got -1"):
        probe_model(model, "mse", X, y, **kw, step=-1)
    with pytest.raises(InputError, match=r"`settings` must be a ProbeSettings; got dict"):
        probe_model(model, "mse", X, y, **{**kw, "settings": {"top_k": 3}})
    with pytest.raises(InputError, match=r"`out` \(the run directory to write\) is required"):
        probe_model(model, "mse", X, y, **{**kw, "out": None})
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match=r"afile: is a file; expected a run directory"):
        probe_model(model, "mse", X, y, **{**kw, "out": tmp_path / "afile"})
    with pytest.raises(InputError, match=r"`checkpoints` must be a non-empty mapping"):
        probe_checkpoints(model, "mse", X, y, {}, **kw)
    with pytest.raises(InputError, match=r"`checkpoints` keys must be steps \(integers >= 0\); got 'a'"):
        probe_checkpoints(model, "mse", X, y, {"a": None}, **kw)
    probe_model(model, "mse", X, y, **kw)
    with pytest.raises(InputError, match=r"already holds a run \(run.json\); pass overwrite=True"):
        probe_model(model, "mse", X, y, **kw)
    (tmp_path / "r" / "training.parquet").write_text("stale table of the replaced run")
    assert probe_model(model, "mse", X, y, **kw, overwrite=True, step=3) == tmp_path / "r"
    assert not (tmp_path / "r" / "training.parquet").exists()
    assert read_run(tmp_path / "r").steps == [3]


class Evil:
    """Not a tensor: a weights-only load must refuse to unpickle it."""


def test_load_checkpoint_errors(data, tmp_path):
    model, _, _ = data
    with pytest.raises(InputError, match=r"nope.pt: no such checkpoint file"):
        load_checkpoint(model, tmp_path / "nope.pt")
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"evil.pt: not a weights-only state_dict"):
        load_checkpoint(model, tmp_path / "evil.pt")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(InputError, match=r"t.pt: holds a Tensor, expected a state_dict"):
        load_checkpoint(model, tmp_path / "t.pt")
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "small.pt")
    with pytest.raises(InputError, match=r"small.pt: does not fit the model"):
        load_checkpoint(model, tmp_path / "small.pt")
