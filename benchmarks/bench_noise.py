"""Benchmark: noise sampling costs — SGD draws vs one per-sample-gradient pass, dropout draws vs
sequential backward passes, and a full probe's time and memory at >= 100k parameters.

Run::

    PYTHONPATH=. python benchmarks/bench_noise.py            # digits MLP + 113k-parameter probe
    PYTHONPATH=. python benchmarks/bench_noise.py --quick    # digits MLP only
    PYTHONPATH=. python benchmarks/bench_noise.py --dropout-exact   # exact dropout moments only
    PYTHONPATH=. python benchmarks/bench_noise.py --dropout-cost    # dropout source, draws off, 1/2/4 sites

Everything is float64 on the full digits training set (n = 1,797), K = 1,000 draws projected on
d = 30 directions (as a probe with top_k = 20 and n_random = 10). Times are the minimum over
``--repeats``; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch
from torch import nn
from torch.func import grad, vmap

from varprinciple.collect._model import ProbedModel
from varprinciple.collect.curvature import HessianOperator
from varprinciple.collect.losses import Loss
from varprinciple.collect.noise.dropout_exact import dropout_pair_moments
from varprinciple.collect.noise import DropoutSites, dropout_noise, random_directions, sgd_noise
from varprinciple.collect.probe import ProbeSettings, probe


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float64), torch.tensor(d.target)


def mlp(widths, drop_after=(-1,), p=0.2, seed=0):
    """ReLU MLP; nn.Dropout(p) after the hidden layers listed in ``drop_after`` (-1 = last)."""
    torch.manual_seed(seed)
    hidden = len(widths) - 2
    idx = {h % hidden for h in drop_after}
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-2], widths[1:-1])):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if i in idx:
            layers.append(nn.Dropout(p))
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers).double()


def train(model, X, y, steps, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model


def best(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def sequential_dropout(model, X, y, V, K):
    """The baseline: K sequential full-batch backward passes with nn.Dropout in train mode."""
    model.train()
    params = list(model.parameters())
    out = torch.empty(K, V.shape[1], dtype=torch.float64)
    for k in range(K):
        loss = nn.functional.cross_entropy(model(X), y)
        g = torch.autograd.grad(loss, params)
        out[k] = torch.cat([t.reshape(-1) for t in g]) @ V
    return out


def bench_digits(args):
    X, y = digits()
    K, d = args.draws, 30
    print(f"== digits MLP 64-50-50-10 (6,310 parameters), n = {len(X)}, K = {K}, d = {d}, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    model = train(mlp((64, 50, 50, 10)), X, y, 300, 0.5)
    pm = ProbedModel(model, Loss.CROSS_ENTROPY, X, y, dtype=torch.float64)
    op = HessianOperator(pm)
    V = random_directions(pm.n_params, d, generator=torch.Generator().manual_seed(0))
    f = vmap(grad(pm.one_sample_loss), in_dims=(None, 0, 0))
    f(pm.params, pm.X[:4], pm.y[:4])  # warm-up (first vmap call traces)

    t_psg = best(lambda: pm.flatten(f(pm.params, pm.X, pm.y), batched=True), args.repeats)
    t_sgd = best(lambda: sgd_noise(pm, V, gradient=op.gradient, batch_size=32, n_samples=K,
                                   generator=torch.Generator().manual_seed(1)), args.repeats)
    print(f"  one per-sample-gradient pass (vmap(grad), all n)   {t_psg:7.3f} s")
    print(f"  K SGD draws + exact variance (sgd_noise)           {t_sgd:7.3f} s   "
          f"ratio {t_sgd / t_psg:.2f}x (target <= 2x)")

    for label, drop_after in [("dropout at the last hidden layer", (-1,)),
                              ("dropout after both hidden layers", (0, 1))]:
        net = mlp((64, 50, 50, 10), drop_after=drop_after)
        net = train(net, X, y, 300, 0.5)
        pmd = ProbedModel(net, Loss.CROSS_ENTROPY, X, y, dtype=torch.float64)
        opd = HessianOperator(pmd)
        sites = DropoutSites(pmd)
        Vd = random_directions(pmd.n_params, d, generator=torch.Generator().manual_seed(0))
        Ks = max(50, K // 5)  # sequential baselines on fewer draws, scaled to K
        t_seq = best(lambda: sequential_dropout(net, X, y, Vd, Ks), args.repeats) * K / Ks
        t_loop = best(lambda: dropout_noise(sites, Vd, gradient=opd.gradient, n_samples=Ks,
                                            generator=torch.Generator().manual_seed(2), method="loop"),
                      args.repeats) * K / Ks
        t_vmap = best(lambda: dropout_noise(sites, Vd, gradient=opd.gradient, n_samples=K,
                                            generator=torch.Generator().manual_seed(2), method="vmap"),
                      args.repeats)
        res = {}

        def auto(n_full):
            res[n_full] = dropout_noise(sites, Vd, gradient=opd.gradient, n_samples=K, n_full=n_full,
                                        generator=torch.Generator().manual_seed(2), method="auto")
        t_auto0 = best(lambda: auto(0), args.repeats)
        t_auto64 = best(lambda: auto(64), args.repeats)
        pays = sites.fast_path_pays(d)
        sites.remove()
        print(f"  -- {label} (p = 0.2)")
        print(f"  K sequential backward passes (nn.Dropout, train mode) {t_seq:7.3f} s  (timed on {Ks}, scaled)")
        print(f"  K draws, loop oracle (functional, one pass per draw)  {t_loop:7.3f} s  (timed on {Ks}, scaled)")
        print(f"  K draws, exact gradients batched over draws (vmap)    {t_vmap:7.3f} s")
        what = "32 exact + cut-site projections" if pays else "exact, batched: shortcut would not pay"
        print(f"  K draws, auto ({what}) {t_auto0:7.3f} s   "
              f"speed-up {t_seq / t_auto0:.2f}x vs sequential (target >= 3x); fast path "
              f"{res[0].extra['fast_path']}")
        print(f"  K draws, auto with 64 full vectors (probe default)    {t_auto64:7.3f} s   "
              f"speed-up {t_seq / t_auto64:.2f}x vs sequential")


def bench_large(args):
    X, y = digits()
    model = train(mlp((64, 300, 300, 10)), X, y, 200, 0.2)
    D = sum(p.numel() for p in model.parameters())
    K, d = args.draws, 30
    pmd = ProbedModel(model, Loss.CROSS_ENTROPY, X, y, dtype=torch.float64)
    opd = HessianOperator(pmd)
    sites = DropoutSites(pmd)
    Vd = random_directions(pmd.n_params, d, generator=torch.Generator().manual_seed(0))
    Ks = 40
    t_seq = best(lambda: sequential_dropout(model, X, y, Vd, Ks), 2) * K / Ks
    out = {}

    def auto():
        out["nd"] = dropout_noise(sites, Vd, gradient=opd.gradient, n_samples=K, n_full=64,
                                  generator=torch.Generator().manual_seed(2))
    t_auto = best(auto, 2)
    sites.remove()
    print(f"\n== digits MLP 64-300-300-10 ({D:,} parameters), dropout at the last hidden layer (p = 0.2), "
          f"K = {K}, d = {d}")
    print(f"  K sequential backward passes (nn.Dropout, train mode) {t_seq:7.2f} s  (timed on {Ks}, scaled)")
    print(f"  K draws, auto, 64 full vectors (probe default)        {t_auto:7.2f} s   speed-up "
          f"{t_seq / t_auto:.2f}x (target >= 3x); fast path {out['nd'].extra['fast_path']}")
    print(f"\n== full probe, digits MLP 64-300-300-10 with dropout at the last hidden layer ({D:,} parameters), "
          f"default ProbeSettings (top_k 20, K 1000, sgd+dropout+isotropic, tr_hc 64, Hutchinson 64), "
          f"load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    res = probe(model, "cross_entropy", X, y, settings=ProbeSettings(), step=0,
                generator=torch.Generator().manual_seed(0))
    total = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))
    print(f"  total {total:.1f} s, {res.n_hvp} HVPs (eigensolver {res.info['n_hvp_eigensolver']}), "
          f"lambda_max {res.eigen['eigenvalue'].iloc[0]:.4g}, max residual {res.eigen['residual'].max():.1e}")
    print(f"  peak RSS of this process {rss:.2f} GiB (target: within the 24 GiB machine)")
    print("  " + "; ".join(f"{k}: {v}" for k, v in res.info["noise_extra"].items()))


def _dropout_source_timings(net, X, y, *, d: int, J: int, Kc: int, reps: int, sequential_K: int = 0,
                            sequential_on: int = 0) -> dict:
    """Best-of-``reps`` seconds of the dropout source's parts on ``net``: one bare per-sample-gradient
    pass, the two-mask exact moments (J groups), their J HVPs for Tr(HC), K' = ``Kc`` sampled draws,
    and (``sequential_K``) K sequential train-mode backward passes, timed on ``sequential_on``
    and scaled. Shared by the exact-moments and the source-cost benchmarks."""
    pmd = ProbedModel(net, Loss.CROSS_ENTROPY, X, y, dtype=torch.float64)
    opd = HessianOperator(pmd)
    sites = DropoutSites(pmd)
    Vd = random_directions(pmd.n_params, d, generator=torch.Generator().manual_seed(0))
    t = {"D": pmd.n_params, "n": pmd.n}
    if sequential_K:
        t["seq"] = best(lambda: sequential_dropout(net, X, y, Vd, sequential_on), reps) * sequential_K / sequential_on
    f = vmap(grad(pmd.one_sample_loss), in_dims=(None, 0, 0))
    f(pmd.params, pmd.X[:4], pmd.y[:4])
    t["pass"] = best(lambda: [pmd.flatten(f(pmd.params, pmd.X[s:s + 600], pmd.y[s:s + 600]), batched=True)
                              for s in range(0, pmd.n, 600)], reps)
    out = {}

    def pairs():
        out["m"] = dropout_pair_moments(sites, Vd, generator=torch.Generator().manual_seed(3), n_groups=J)
    t["pairs"] = best(pairs, reps)
    t["hvp"] = best(lambda: opd.matmat(out["m"].W), reps)
    t["draws"] = best(lambda: dropout_noise(sites, Vd, gradient=opd.gradient, n_samples=Kc, n_full=0,
                                            trace_samples=4, generator=torch.Generator().manual_seed(2)), reps)
    sites.remove()
    return t


def bench_dropout_exact(args):
    """Dropout's exact moments (two masks per sample) against K sequential backward passes."""
    X, y = digits()
    K, d, J = args.draws, 30, 64
    for widths in [(64, 50, 50, 10), (64, 300, 300, 10)][:1 if args.quick else 2]:
        for label, drop_after in [("1 site (last hidden layer)", (-1,)), ("2 sites (both hidden layers)", (0, 1))]:
            net = train(mlp(widths, drop_after=drop_after), X, y, 200, 0.3)
            reps = args.repeats if widths[1] < 100 else 1
            Ks = 100 if widths[1] < 100 else 30
            Kc = 200
            t = _dropout_source_timings(net, X, y, d=d, J=J, Kc=Kc, reps=reps, sequential_K=K, sequential_on=Ks)
            t_seq, t_pass, t_pairs, t_hvp, t_draws = t["seq"], t["pass"], t["pairs"], t["hvp"], t["draws"]
            print(f"\n== dropout exact moments, MLP {'-'.join(map(str, widths))} ({t['D']:,} parameters), {label}, "
                  f"p = 0.2, n = {t['n']}, d = {d}, J = {J}, load average {os.getloadavg()[0]:.1f}")
            print(f"  K = {K} sequential backward passes (nn.Dropout, train mode) {t_seq:8.2f} s  "
                  f"(timed on {Ks}, scaled)")
            print(f"  one per-sample-gradient pass (vmap(grad), no dropout)      {t_pass:8.3f} s")
            print(f"  exact moments, two masks per sample (dropout_pair_moments)  {t_pairs:8.3f} s  "
                  f"= {t_pairs / t_pass:.2f} per-sample passes; {t_seq / t_pairs:.1f}x faster than K sequential")
            print(f"  + {J} HVPs for Tr(HC)                                        {t_hvp:8.3f} s")
            print(f"  + K' = {Kc} sampled draws (auto)                              {t_draws:8.3f} s  "
                  f"-> dropout source total {t_pairs + t_draws:.2f} s, "
                  f"{t_seq / (t_pairs + t_draws):.1f}x faster than K = {K} sequential passes")


def bench_dropout_cost(args):
    """The dropout source's cost with ``[probe] dropout_samples = 0`` (exact moments only: the
    two-mask pass), in bare per-sample-gradient passes, at 1, 2 and 4 dropout sites, beside the
    J HVPs of its Tr(HC) (the flatness stage's, as for every source's rho) and K' = 200 sampled
    draws (what the statistics needed before issue 19)."""
    X, y = digits()
    d, J, Kc = 30, 64, 200
    widths = (64, 100, 100, 100, 100, 10)
    print(f"\n== dropout source cost, MLP {'-'.join(map(str, widths))}, p = 0.2, n = {len(X)}, d = {d}, J = {J}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| sites | 1 per-sample pass | dropout source, dropout_samples = 0 (two-mask pass) | in passes "
          f"| + {J} HVPs for Tr(HC) (flatness stage) | in passes | K' = {Kc} sampled draws | in passes |")
    print("|---|---|---|---|---|---|---|---|")
    for drop_after in [(3,), (2, 3), (0, 1, 2, 3)]:
        net = train(mlp(widths, drop_after=drop_after), X, y, 200, 0.3)
        t = _dropout_source_timings(net, X, y, d=d, J=J, Kc=Kc, reps=args.repeats)
        t_pass, t_pairs, t_hvp, t_draws = t["pass"], t["pairs"], t["hvp"], t["draws"]
        print(f"| {len(drop_after)} ({t['D']:,} params) | {t_pass:.3f} s | {t_pairs:.3f} s | "
              f"**{t_pairs / t_pass:.2f}** | {t_hvp:.3f} s | {t_hvp / t_pass:.2f} | {t_draws:.3f} s | "
              f"{t_draws / t_pass:.2f} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dropout-exact", action="store_true", help="only the exact dropout moments section")
    p.add_argument("--dropout-cost", action="store_true",
                   help="only the dropout source's cost with dropout_samples = 0 at 1, 2, 4 sites")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: see bench_curvature)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dropout_exact:
        bench_dropout_exact(args)
        return
    if args.dropout_cost:
        bench_dropout_cost(args)
        return
    bench_digits(args)
    if not args.quick:
        bench_large(args)


if __name__ == "__main__":
    sys.exit(main())
