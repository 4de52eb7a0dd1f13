"""Hessian probes against dense oracles (float64, models small enough for dense eigh)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect.curvature import (  # noqa: E402
    DENSE_MAX_PARAMS, EigenResult, HessianOperator, dense_hessian, hessian_operator, top_eigenpairs)
from varprinciple.collect.losses import Loss, mean_loss, parse_loss, per_sample_loss  # noqa: E402
from varprinciple.errors import ConfigError, InputError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]



def _mlp(seed: int, widths=(3, 6, 5, 2), act=nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def _data(n=30, d=3, out=2, *, ce=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, out, (n,), generator=g) if ce else torch.randn(n, out, generator=g, dtype=torch.float64)
    return X, y


def _flat_loss(model, loss, X, y):
    """Independent oracle: the loss as a function of one flat float64 parameter vector."""
    m = model.double()
    shapes = [p.shape for p in m.parameters()]
    names = [n for n, _ in m.named_parameters()]

    def f(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = theta[i:i + k].reshape(s)
            i += k
        out = torch.func.functional_call(m, params, (X,))
        return mean_loss(Loss(loss), out, y if loss == "cross_entropy" else y.reshape(out.shape))

    theta = torch.cat([p.detach().reshape(-1) for p in m.parameters()]).double()
    return f, theta


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_dense_hessian_matches_autograd_functional(loss):
    model = _mlp(1)
    X, y = _data(ce=loss == "cross_entropy")
    H = dense_hessian(model, loss, X, y)
    f, theta = _flat_loss(model, loss, X, y)
    H_ref = torch.autograd.functional.hessian(f, theta).numpy()
    np.testing.assert_allclose(H, H_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_top_eigenpairs_match_dense_eigh(loss):
    model = _mlp(2, widths=(3, 8, 6, 3))
    X, y = _data(n=40, out=3, ce=loss == "cross_entropy")
    H = dense_hessian(model, loss, X, y)
    w, U = np.linalg.eigh(H)
    w, U = w[::-1], U[:, ::-1]
    op = hessian_operator(model, loss, X, y)
    k = 6
    res = top_eigenpairs(op, k=k, tol=1e-12, generator=torch.Generator().manual_seed(0))
    assert res.method == "eigsh"
    np.testing.assert_allclose(res.eigenvalues, w[:k], rtol=1e-9, atol=1e-12)
    cos = np.abs(np.sum(res.eigenvectors * U[:, :k], axis=0))
    np.testing.assert_allclose(cos, 1.0, atol=1e-7)
    assert np.all(np.diff(res.eigenvalues) <= 0)
    # residuals ||Hv - lambda v|| computed with the dense matrix
    r = np.linalg.norm(H @ res.eigenvectors - res.eigenvectors * res.eigenvalues, axis=0)
    np.testing.assert_allclose(res.residuals, r, atol=1e-10)
    assert res.residuals.max() < 1e-8
    assert res.n_hvp == res.extra["n_hvp_solver"] + k


def test_warm_start_gives_same_pairs():
    model = _mlp(3)
    X, y = _data()
    op = hessian_operator(model, "mse", X, y)
    a = top_eigenpairs(op, k=4, generator=torch.Generator().manual_seed(0))
    b = top_eigenpairs(op, k=4, v0=a.eigenvectors[:, 0])
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-10)
    c = top_eigenpairs(op, k=4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a.eigenvalues, c.eigenvalues)  # seeded start: reproducible


def test_linear_least_squares_eigenvalues_are_those_of_xtx_over_n():
    g = torch.Generator().manual_seed(5)
    n, d = 50, 6
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1)  # with bias: H = A^T A / n with A = [X, 1]
    op = hessian_operator(model, "mse", X, y)
    A = np.hstack([X.numpy(), np.ones((n, 1))])
    w = np.linalg.eigvalsh(A.T @ A / n)[::-1]
    res = top_eigenpairs(op, k=4, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(res.eigenvalues, w[:4], rtol=1e-10)
    full = top_eigenpairs(op, k=d + 1)  # k = D: the dense path
    assert full.method == "dense"
    np.testing.assert_allclose(full.eigenvalues, w, rtol=1e-10, atol=1e-12)


def test_matvec_matmat_and_batched_path_agree_with_dense():
    model = _mlp(4)
    X, y = _data(ce=True)
    H = dense_hessian(model, "cross_entropy", X, y)
    op = hessian_operator(model, "cross_entropy", X, y)
    V = torch.randn(op.n_params, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(V[:, 0]).numpy(), H @ V[:, 0].numpy(), atol=1e-12)
    loop = op.matmat(V).numpy()
    op._batched_ok = True  # the opt-in batched (is_grads_batched) path
    batched = op.matmat(V).numpy()
    np.testing.assert_allclose(loop, H @ V.numpy(), atol=1e-12)
    np.testing.assert_allclose(batched, loop, atol=1e-12)
    lo = op.as_linear_operator()
    np.testing.assert_allclose(lo.matmat(V.numpy()), loop, atol=1e-12)
    assert op.gradient.shape == (op.n_params,)


def test_gradient_and_loss_value_match_plain_autograd():
    model = _mlp(6)
    X, y = _data()
    op = hessian_operator(model, "mse", X, y)
    f, theta = _flat_loss(model, "mse", X, y)
    theta.requires_grad_(True)
    val = f(theta)
    (g,) = torch.autograd.grad(val, theta)
    np.testing.assert_allclose(op.gradient.numpy(), g.numpy(), atol=1e-14)
    assert op.loss_value == pytest.approx(float(val.detach()), rel=1e-14)


def test_eigen_frame_follows_schema():
    model = _mlp(7)
    X, y = _data()
    res = top_eigenpairs(hessian_operator(model, "mse", X, y), k=3, generator=torch.Generator().manual_seed(0))
    assert isinstance(res, EigenResult) and res.k == 3
    df = res.to_frame(step=5, store_vectors=True)
    assert list(df.columns) == ["step", "rank", "eigenvalue", "residual", "vector"]
    assert df["step"].tolist() == [5, 5, 5] and df["rank"].tolist() == [0, 1, 2]
    assert df["vector"].iloc[0].dtype == np.float32 and len(df["vector"].iloc[0]) == res.eigenvectors.shape[0]
    assert "vector" not in res.to_frame(step=0).columns


def test_model_is_not_modified():
    model = _mlp(8).float().train()
    before = [p.detach().clone() for p in model.parameters()]
    X, y = _data()
    hessian_operator(model, "mse", X.float(), y.float())
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_dropout_is_off_for_the_hessian():
    torch.manual_seed(0)
    with_drop = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 2)).train()
    without = nn.Sequential(with_drop[0], with_drop[1], with_drop[3])
    X, y = _data()
    np.testing.assert_array_equal(dense_hessian(with_drop, "mse", X, y), dense_hessian(without, "mse", X, y))


# ------------------------------------------------------------------------- refusals


def test_batchnorm_is_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    X, y = _data()
    with pytest.raises(ConfigError, match=r"layer '1' \(BatchNorm1d\) depends on the batch"):
        hessian_operator(model, "mse", X, y)


def test_dense_refuses_large_models():
    model = nn.Linear(70, 60)  # 4,260 parameters
    X = torch.zeros(4, 70)
    y = torch.zeros(4, 60)
    with pytest.raises(ConfigError, match=r"dense_hessian refuses 4260 parameters \(> max_params=4000\)"):
        dense_hessian(model, "mse", X, y)
    assert DENSE_MAX_PARAMS == 4000
    op = hessian_operator(nn.Linear(3, 1), "mse", torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ConfigError, match="refuses 4260"):
        dense_hessian(model, "mse", X, y, max_params=4259)
    assert op.n_params == 4


def test_top_eigenpairs_argument_errors():
    op = hessian_operator(_mlp(9), "mse", *_data())
    D = op.n_params
    with pytest.raises(ConfigError, match=r"`top_k` must be an integer in \[1, %d\]" % D):
        top_eigenpairs(op, k=0)
    with pytest.raises(ConfigError, match=r"`top_k` must be an integer"):
        top_eigenpairs(op, k=D + 1)
    with pytest.raises(ConfigError, match="`method` must be one of"):
        top_eigenpairs(op, k=2, method="lobpcg")
    with pytest.raises(ConfigError, match="eigsh needs `top_k`"):
        top_eigenpairs(op, k=D - 1, method="eigsh")
    with pytest.raises(InputError, match=r"`v0` must be a finite nonzero vector of length %d" % D):
        top_eigenpairs(op, k=2, v0=np.zeros(D))
    with pytest.raises(InputError, match="`v0` must be a finite nonzero vector"):
        top_eigenpairs(op, k=2, v0=np.ones(D + 1))


def test_dense_method_refuses_large_models():
    op = hessian_operator(nn.Linear(70, 60), "mse", torch.zeros(4, 70), torch.zeros(4, 60))
    with pytest.raises(ConfigError, match="dense eigendecomposition refuses 4260 parameters"):
        top_eigenpairs(op, k=2, method="dense")


def test_input_errors():
    X, y = _data()
    with pytest.raises(InputError, match="`model` must be a torch.nn.Module; got str"):
        hessian_operator("net", "mse", X, y)
    with pytest.raises(ConfigError, match=r"`loss` must be one of 'mse', 'cross_entropy' or a callable loss\(output, target\) returning per-sample losses; got 'l1'"):
        hessian_operator(_mlp(0), "l1", X, y)
    with pytest.raises(ConfigError, match="`dtype` must be one of"):
        hessian_operator(_mlp(0), "mse", X, y, dtype="float16")
    with pytest.raises(InputError, match="`X` must be a torch tensor or NpyRows"):
        hessian_operator(_mlp(0), "mse", X.numpy(), y)
    with pytest.raises(InputError, match="`X` needs at least 2 samples"):
        hessian_operator(_mlp(0), "mse", X[:1], y[:1])
    with pytest.raises(InputError, match="has no trainable parameters"):
        hessian_operator(nn.Sequential(nn.Tanh()), "mse", X, y)


def test_target_checks():
    X, y = _data()
    with pytest.raises(InputError, match=r"`y` has shape \(30, 3\) but the model output has shape"):
        hessian_operator(_mlp(0), "mse", X, torch.zeros(30, 3))
    with pytest.raises(InputError, match="`y` has 29 rows but `X` has 30"):
        hessian_operator(_mlp(0), "mse", X, y[:29])
    with pytest.raises(InputError, match="integer class labels for cross_entropy"):
        hessian_operator(_mlp(0), "cross_entropy", X, torch.zeros(30))
    with pytest.raises(InputError, match=r"labels must lie in \[0, 2\); got range \[0, 5\]"):
        hessian_operator(_mlp(0), "cross_entropy", X, torch.tensor([0, 5] * 15))
    with pytest.raises(InputError, match=r"needs an \(n, classes\) output"):
        hessian_operator(nn.Sequential(nn.Linear(3, 2), nn.Flatten(0)), "cross_entropy", X, torch.zeros(30).long())
    # (n,) targets work with an (n, 1) output
    op = hessian_operator(nn.Linear(3, 1), "mse", X, y[:, 0])
    assert op.pm.y.shape == (30, 1)


def test_losses_definitions():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # MSE: (1/2n) sum ||f - y||^2 with the sum over outputs
    assert float(mean_loss(Loss.MSE, out, y)) == pytest.approx((1 + 4 + 1 + 4) / 4)
    np.testing.assert_allclose(per_sample_loss(Loss.MSE, out, y).numpy(), [2.5, 2.5])
    lab = torch.tensor([1, 0])
    ref = torch.nn.functional.cross_entropy(out, lab, reduction="none")
    np.testing.assert_allclose(per_sample_loss(Loss.CROSS_ENTROPY, out, lab).numpy(), ref.numpy(), rtol=1e-15)
    assert parse_loss("mse") is Loss.MSE
    with pytest.raises(ConfigError, match="`loss` must be one of"):
        parse_loss("hinge")
    op = hessian_operator(nn.Linear(3, 1), "mse", torch.zeros(4, 3), torch.zeros(4))
    assert isinstance(op, HessianOperator)


def test_partial_arpack_convergence_keeps_converged_pairs(monkeypatch):
    import scipy.sparse.linalg as sla

    import varprinciple.collect.curvature as curv
    op = hessian_operator(_mlp(10), "mse", *_data())
    H = dense_hessian(_mlp(10), "mse", *_data())
    w, U = np.linalg.eigh(H)

    def partial(A, **kw):
        raise sla.ArpackNoConvergence("no convergence", w[-2:], U[:, -2:])

    monkeypatch.setattr(curv, "eigsh", partial)
    with pytest.warns(curv.EigenConvergenceWarning, match="eigsh converged 2 of 4 eigenpairs; keeping those"):
        res = top_eigenpairs(op, k=4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.eigenvalues, w[::-1][:2], rtol=1e-12)

    def nothing(A, **kw):
        raise sla.ArpackNoConvergence("no convergence", np.zeros(0), np.zeros((op.n_params, 0)))

    monkeypatch.setattr(curv, "eigsh", nothing)
    from varprinciple.errors import VarPrincipleError
    with pytest.raises(VarPrincipleError, match=r"eigsh converged none of the top 4 Hessian eigenpairs; raise "
                                                r"`eig_tol` \(now 1e-10\) or lower `top_k`"):
        top_eigenpairs(op, k=4, generator=torch.Generator().manual_seed(0))
