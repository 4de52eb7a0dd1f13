"""Benchmark: block Hessian products + block eigensolvers against the probe's single-vector eigsh.

Issue 19 item 8 (exploratory). The probe's top-k eigenpairs come from scipy ``eigsh`` over
single Hessian-vector products through the kept gradient graph (``top_eigenpairs``). This
script asks whether *block* products (several vectors per backward pass) with a *block*
eigensolver reach the same accuracy faster, at k = 20 on the two benchmark MLPs of
``bench_curvature.py`` (digits 64-50-50-10, 6,310 parameters; 64-300-300-10, 112,810)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_block_eigs.py            # both models
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_block_eigs.py --quick    # 6k only

Part 1 (products): milliseconds per Hessian-vector product for a block of b vectors, formed
(a) one by one through the kept graph (the package's ``matmat``), (b) together through the kept
graph with ``autograd.grad(..., is_grads_batched=True)``, (c) ``torch.func.vmap`` over
forward-over-reverse ``jvp(grad)`` (no kept graph). Ratios to (a).

Part 2 (solvers), each from the same Gaussian start, methods interleaved over ``--repeats``
(minimum time per method, ratios to eigsh from the same process):

- ``eigsh``: ``top_eigenpairs`` (ARPACK Lanczos, ``ncv = 2k + 1``, ``tol = eig_tol``), single HVPs;
- ``lobpcg``: ``scipy.sparse.linalg.lobpcg(largest=True)`` with a block of ``k + extra`` vectors,
  batched products, stopping at absolute residual ``eig_tol * lambda_k`` (scipy's criterion is
  absolute; lambda_k from eigsh, which favours LOBPCG);
- ``block Krylov``: block Lanczos with full reorthogonalisation and Rayleigh-Ritz on the whole
  basis (its products kept, so Ritz residuals cost no products), block size b, batched products,
  stopping when every top-k Ritz residual is ``<= eig_tol * |theta|`` (and once more with the
  smallest block and products formed one by one, to separate product count from product cost).

Accuracy is checked outside the timed region with the same residual routine for every method:
max_i ||H v_i - lambda_i v_i|| / |lambda_i| (must be <= eig_tol) and the top-k eigenvalues'
max relative difference to eigsh's (must be <= 1e-6).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch
from scipy.linalg import eigh as dense_eigh
from scipy.sparse.linalg import LinearOperator, lobpcg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_curvature import digits, make_model

from varprinciple.collect._model import ProbedModel
from varprinciple.collect.curvature import HessianOperator, _residuals, top_eigenpairs
from varprinciple.collect.losses import Loss

K = 20


def batched_op(pm) -> HessianOperator:
    op = HessianOperator(pm)
    op._batched_ok = True  # products of a block through the kept graph, is_grads_batched
    return op


# ------------------------------------------------------------------------------ part 1: products


def product_costs(pm, bs, repeats):
    from torch.func import grad, jvp, vmap
    loop = HessianOperator(pm)
    bat = batched_op(pm)
    names = pm.names
    theta = {n: p.detach() for n, p in pm.params.items()}

    def f(params):
        return pm.batch_loss(params, pm.X, pm.y)

    def hvp_func(V):  # V: (D, b) -> (D, b) via vmap over jvp(grad)
        def one(v):
            sizes = [theta[n].numel() for n in names]
            tang = {n: t.reshape(theta[n].shape) for n, t in zip(names, v.split(sizes))}
            out = jvp(grad(f), (theta,), (tang,))[1]
            return torch.cat([out[n].reshape(-1) for n in names])
        return vmap(one)(V.T.contiguous()).T

    g = torch.Generator().manual_seed(1)
    rows = []
    for b in bs:
        V = torch.randn(pm.n_params, b, generator=g, dtype=pm.dtype)
        ref = loop.matmat(V)
        chk = (bat.matmat(V) - ref).abs().max().item() / ref.abs().max().item()
        try:
            chk_f = (hvp_func(V) - ref).abs().max().item() / ref.abs().max().item()
            fns = {"loop": lambda V=V: loop.matmat(V), "batched": lambda V=V: bat.matmat(V),
                   "vmap": lambda V=V: hvp_func(V)}
        except Exception as exc:  # noqa: BLE001 - report what cannot run
            print(f"   vmap(jvp(grad)) unavailable: {type(exc).__name__}: {exc}")
            chk_f = float("nan")
            fns = {"loop": lambda V=V: loop.matmat(V), "batched": lambda V=V: bat.matmat(V)}
        best = {m: np.inf for m in fns}
        for _ in range(repeats):  # interleaved
            for m, fn in fns.items():
                t = time.perf_counter()
                fn()
                best[m] = min(best[m], time.perf_counter() - t)
        ms = {m: 1e3 * t / b for m, t in best.items()}
        line = (f"   b = {b:2d}: ms per product  loop {ms['loop']:7.2f}  | batched (kept graph) "
                f"{ms['batched']:7.2f} ({ms['batched'] / ms['loop']:.2f}x loop, rel diff {chk:.0e})")
        if "vmap" in ms:
            line += f"  | vmap(jvp(grad)) {ms['vmap']:7.2f} ({ms['vmap'] / ms['loop']:.2f}x, rel diff {chk_f:.0e})"
        print(line)
        rows.append((b, ms))
    return rows


# ------------------------------------------------------------------------------ part 2: solvers


def block_krylov(op: HessianOperator, *, k: int, b: int, tol: float, X0: np.ndarray, max_dim: int):
    """Top-k largest-algebraic eigenpairs by block Lanczos with full reorthogonalisation.

    The basis Q (D x m) and its products HQ are kept; after each block the Rayleigh-Ritz
    problem T = Q^T H Q (from the kept products) gives Ritz pairs whose residuals
    ||HQy - theta Qy|| need no further products. Stops when the top-k residuals are all
    <= tol * |theta|, or at ``max_dim`` basis vectors.
    """
    dt = op.pm.dtype
    Q, _ = np.linalg.qr(X0)
    Qs, HQs = [], []
    while True:
        HQ = op.matmat(torch.from_numpy(np.ascontiguousarray(Q)).to(dt)).double().numpy()
        Qs.append(Q)
        HQs.append(HQ)
        Qb, HQb = np.hstack(Qs), np.hstack(HQs)
        T = Qb.T @ HQb
        T = 0.5 * (T + T.T)
        w, Y = dense_eigh(T)
        w, Y = w[::-1][:k], Y[:, ::-1][:, :k]
        R = HQb @ Y - (Qb @ Y) * w[None, :]
        rel = np.linalg.norm(R, axis=0) / np.abs(w)
        if np.all(rel <= tol) or Qb.shape[1] + b > max_dim:
            return w, Qb @ Y
        # next block: H Q_last orthogonalised against the whole basis (twice), then QR
        W = HQ.copy()
        for _ in range(2):
            W -= Qb @ (Qb.T @ W)
        Q, _ = np.linalg.qr(W)


def run_eigsh(pm, v0, tol):
    op = HessianOperator(pm)
    t0 = time.perf_counter()
    res = top_eigenpairs(op, k=K, tol=tol, v0=v0)
    t = time.perf_counter() - t0 - (res.seconds - res.extra["seconds_solver"])
    return res.eigenvalues, res.eigenvectors, res.extra["n_hvp_solver"], t


def run_lobpcg(pm, X0, tol_abs, maxiter):
    op = batched_op(pm)
    dt = pm.dtype
    t0 = time.perf_counter()

    def mm(X):
        return op.matmat(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64)).to(dt)).double().numpy()

    A = LinearOperator((pm.n_params,) * 2, matvec=lambda x: mm(x.reshape(-1, 1))[:, 0], matmat=mm,
                       dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lam, V = lobpcg(A, X0.copy(), tol=tol_abs, maxiter=maxiter, largest=True)
    order = np.argsort(lam)[::-1][:K]
    t = time.perf_counter() - t0
    return lam[order], V[:, order], op.n_hvp, t


def run_block_krylov(pm, X0, tol, max_dim, *, batched=True):
    op = batched_op(pm) if batched else HessianOperator(pm)
    t0 = time.perf_counter()
    lam, V = block_krylov(op, k=K, b=X0.shape[1], tol=tol, X0=X0, max_dim=max_dim)
    return lam, V, op.n_hvp, time.perf_counter() - t0


def check(pm, lam, V, ref):
    op = HessianOperator(pm)
    V = V / np.linalg.norm(V, axis=0)
    r = _residuals(op, lam, np.ascontiguousarray(V))
    return float(np.max(r / np.abs(lam))), float(np.max(np.abs(lam - ref) / np.abs(ref)))


def bench(name, model, X, y, args):
    pm = ProbedModel(model, Loss.CROSS_ENTROPY, X, y, dtype=torch.float64)
    D = pm.n_params
    print(f"\n== {name}: {D:,} parameters, n = {len(X)}, float64, k = {K}, eig_tol {args.tol:g}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(" part 1: cost per Hessian-vector product by block size (min over repeats, interleaved)")
    product_costs(pm, args.blocks_products, args.repeats)
    rng = np.random.default_rng(0)
    v0 = rng.standard_normal(D)
    lam_ref, _, _, _ = run_eigsh(pm, v0, args.tol)
    tol_abs = args.tol * float(lam_ref[K - 1])
    methods = {"eigsh (single HVPs)": lambda: run_eigsh(pm, v0, args.tol)}
    for extra in args.lobpcg_extra:
        X0 = rng.standard_normal((D, K + extra))
        methods[f"lobpcg block {K + extra}"] = (lambda X0=X0: run_lobpcg(pm, X0, tol_abs, args.maxiter))
    for b in args.krylov_blocks:
        X0 = rng.standard_normal((D, b))
        methods[f"block Krylov b = {b}"] = (lambda X0=X0: run_block_krylov(pm, X0, args.tol, args.max_dim))
    if args.krylov_blocks:  # the same solver with products one by one: separates the two factors
        b = min(args.krylov_blocks)
        X0 = rng.standard_normal((D, b))
        methods[f"block Krylov b = {b}, loop"] = (lambda X0=X0: run_block_krylov(pm, X0, args.tol, args.max_dim,
                                                                                  batched=False))
    best, outs = {}, {}
    for _ in range(args.repeats):  # interleaved
        for m, fn in methods.items():
            out = fn()
            if out[3] < best.get(m, np.inf):
                best[m], outs[m] = out[3], out
    print(" part 2: top-20 eigenpairs (min time over interleaved repeats; accuracy checked untimed)")
    t_ref = best["eigsh (single HVPs)"]
    for m in methods:
        lam, V, nh, _ = outs[m]
        rres, rlam = check(pm, lam, V, lam_ref)
        ok = rres <= args.tol and rlam <= 1e-6
        print(f"   {m:28s} {nh:5d} HVPs  time / eigsh {best[m] / t_ref:6.2f}x   max ||Hv-lv||/|l| "
              f"{rres:.1e}   max rel diff to eigsh {rlam:.1e}   {'equal accuracy' if ok else 'NOT equal accuracy'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="digits 6k MLP only")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-10, help="eig_tol (the probe's default 1e-10)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--blocks-products", type=int, nargs="*", default=[1, 5, 10, 25])
    p.add_argument("--lobpcg-extra", type=int, nargs="*", default=[5])
    p.add_argument("--krylov-blocks", type=int, nargs="*", default=[5, 10, 25])
    p.add_argument("--maxiter", type=int, default=200, help="LOBPCG iterations")
    p.add_argument("--max-dim", type=int, default=400, help="block Krylov basis size cap")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y = digits()
    bench("digits MLP 64-50-50-10", make_model((64, 50, 50, 10), X, y, steps=300, lr=0.5), X, y, args)
    if not args.quick:
        bench("digits MLP 64-300-300-10", make_model((64, 300, 300, 10), X, y, steps=200, lr=0.2), X, y, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
