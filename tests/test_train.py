"""Training: GD, SGD and dropout reduce the loss; CPU reproducibility; curves; errors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from varprinciple.collect.config import validate_config  # noqa: E402
from varprinciple.collect.data import load_data  # noqa: E402
from varprinciple.collect.models import build_model  # noqa: E402
from varprinciple.collect.train import evaluate, prepare_tensors, train  # noqa: E402
from varprinciple.errors import InputError  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def digits():
    return load_data(validate_config({"data": {"n_train": 200, "n_test": 100}})["data"])


def setup(ds, loss="cross_entropy", seed=0, drop_prob=None):
    g = torch.Generator().manual_seed(seed)
    model = build_model(validate_config({"model": {"widths": [16]}})["model"], input_shape=ds.input_shape,
                        n_outputs=ds.n_outputs, drop_prob=drop_prob, generator=g)
    tr = prepare_tensors(ds.X_train, ds.y_train, loss=loss, n_outputs=ds.n_outputs, dtype=torch.float32)
    te = prepare_tensors(ds.X_test, ds.y_test, loss=loss, n_outputs=ds.n_outputs, dtype=torch.float32)
    return model, g, tr, te


@pytest.mark.parametrize("method, loss", [("gd", "cross_entropy"), ("sgd", "cross_entropy"),
                                          ("dropout", "cross_entropy"), ("sgd+dropout", "mse")])
def test_training_reduces_loss(digits, method, loss):
    model, g, (X, y, lab), (Xt, yt, labt) = setup(digits, loss, drop_prob=0.2 if "dropout" in method else None)
    res = train(model, loss, X, y, method=method, lr=0.2, steps=60, batch_size=16, generator=g, labels=lab,
                X_test=Xt, y_test=yt, labels_test=labt, log_every=20)
    c = res.curves
    assert list(c.columns) == ["step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "elapsed_s"]
    assert list(c["step"]) == [0, 20, 40, 60]
    assert c["train_loss"].iloc[-1] < 0.7 * c["train_loss"].iloc[0]
    assert c["test_loss"].iloc[-1] < c["test_loss"].iloc[0]
    assert c["train_accuracy"].iloc[-1] > 0.5
    assert not model.training  # left in eval mode
    loss_now, _ = evaluate(model, loss, X, y, lab)
    assert math.isclose(loss_now, res.final_train_loss, rel_tol=1e-6)


def params_after(ds, method, seed):
    model, g, (X, y, lab), _ = setup(ds, seed=seed, drop_prob=0.3)
    train(model, "cross_entropy", X, y, method=method, lr=0.1, steps=15, batch_size=8, generator=g, log_every=5)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_cpu_reproducible_for_a_seed_and_global_rng_untouched(digits):
    torch.manual_seed(99)
    state = torch.random.get_rng_state()
    a = params_after(digits, "sgd+dropout", 0)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = params_after(digits, "sgd+dropout", 0)
    c = params_after(digits, "sgd+dropout", 1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_probe_callback_steps(digits):
    model, g, (X, y, _), _ = setup(digits)
    seen = []
    train(model, "cross_entropy", X, y, method="gd", lr=0.1, steps=10, batch_size=None, generator=g,
          probe_steps=[0, 5, 10], on_probe=lambda s, m: seen.append((s, m.training)))
    assert seen == [(0, False), (5, False), (10, False)]


def test_sgd_batches_are_epochs_of_a_permutation(digits):
    model, g, (X, y, _), _ = setup(digits)
    X, y = X[:10], y[:10]
    rows = []

    def hook(_m, inp):
        rows.append(inp[0].detach().clone())

    h = model.register_forward_pre_hook(hook)
    train(model, "cross_entropy", X, y, method="sgd", lr=0.0, steps=6, batch_size=3, generator=g, log_every=100)
    h.remove()
    batches = [r for r in rows if r.shape[0] == 3]
    assert len(batches) == 6  # every update sees exactly B samples (the last partial batch is dropped)
    ids = [[int(torch.nonzero((X == row).all(dim=(1, 2)))[0]) for row in b] for b in batches]
    for epoch in (ids[:3], ids[3:]):  # 10 // 3 = 3 batches per epoch, without replacement
        flat = [i for b in epoch for i in b]
        assert len(set(flat)) == 9


def test_training_errors(digits):
    model, g, (X, y, _), _ = setup(digits)
    with pytest.raises(InputError, match=r"`batch_size` must be in \[1, 200\) for method 'sgd' \(n = 200 training samples\); got 200"):
        train(model, "cross_entropy", X, y, method="sgd", lr=0.1, steps=1, batch_size=200, generator=g)
    with pytest.raises(InputError, match=r"training diverged at step \d+ \(train loss (nan|inf)\); lower the learning rate \(lr = 1e\+30\)"):
        train(model, "cross_entropy", X, y, method="gd", lr=1e30, steps=5, batch_size=None, generator=g, log_every=1)


def _batch_ids(model, X, y, g, *, steps, batch_size, sampler):
    rows = []
    h = model.register_forward_pre_hook(lambda _m, inp: rows.append(inp[0].detach().clone()))
    train(model, "cross_entropy", X, y, method="sgd", lr=0.0, steps=steps, batch_size=batch_size, generator=g,
          log_every=10 * steps, sampler=sampler)
    h.remove()
    batches = [r for r in rows if r.shape[0] == batch_size]
    return [[int(torch.nonzero((X == row).all(dim=(1, 2)))[0]) for row in b] for b in batches]


def test_independent_sampler_draws_uniform_subsets_independently_across_steps(digits):
    # oracle: B of n without replacement per step, independently: P(i in batch) = B/n and
    # P(i in batch t and batch t+1) = (B/n)^2 (the epochs sampler never repeats a sample
    # within an epoch, so consecutive batches of one epoch never share one)
    model, g, (X, y, _), _ = setup(digits)
    X, y = X[:10], y[:10]
    steps, B, n = 3000, 3, 10
    ids = _batch_ids(model, X, y, g, steps=steps, batch_size=B, sampler="independent")
    assert len(ids) == steps and all(len(set(b)) == B for b in ids)
    counts = torch.bincount(torch.tensor([i for b in ids for i in b]), minlength=n).double()
    p = B / n
    sd = math.sqrt(steps * p * (1 - p))
    assert (counts - steps * p).abs().max() < 4.5 * sd
    shared = sum(len(set(a) & set(b)) for a, b in zip(ids[:-1], ids[1:])) / (steps - 1)
    assert abs(shared - n * p * p) < 0.1  # expected 0.9 shared samples per consecutive pair (sd ~0.02)
    epochs = _batch_ids(model, X, y, g, steps=6, batch_size=B, sampler="epochs")
    assert all(not set(a) & set(b) for a, b in zip(epochs[:2], epochs[1:3]))


def test_sampler_errors_and_config(digits):
    model, g, (X, y, _), _ = setup(digits)
    with pytest.raises(InputError, match=r"`sampler` must be one of \['epochs', 'independent'\]; got 'bootstrap'"):
        train(model, "cross_entropy", X, y, method="sgd", lr=0.1, steps=1, batch_size=8, generator=g,
              sampler="bootstrap")
    from varprinciple.collect.config import CONFIG_KEYS
    from varprinciple.collect.train import SAMPLERS
    assert CONFIG_KEYS["train"]["sampler"].choices == SAMPLERS
