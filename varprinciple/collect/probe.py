"""One probe of a trained network: Hessian eigenpairs, projected noise samples, flatness.

:func:`probe` is the single entry point the collection pipeline (and a user with their own
training code) calls at a probe step. It returns a :class:`ProbeResult` whose tables follow
log schema v1 (:mod:`varprinciple.schema`) and can be handed to :func:`varprinciple.io.write_run`::

    res = probe(model, "cross_entropy", X, y, settings=ProbeSettings(), step=step, generator=g)
    io.write_run(run_dir, meta, eigen=res.eigen, noise=res.noise, tables=res.tables())

Definitions are DESIGN.md's (Hessian of R_S with dropout off; SGD, dropout and isotropic
noise; centred traces); see :mod:`.curvature`, :mod:`.noise`, :mod:`.flatness` and
``docs/probes.md``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import schema
from ..errors import InputError
from ._model import ProbedModel, resolve_dtype
from .blocks import ParameterBlock, block_random_directions, embed, resolve_blocks
from .curvature import BlockHessianOperator, EigenResult, HessianOperator, top_eigenpairs
from .diagonal import with_diagonal
from .flatness import flatness_frame, hutchinson_trace
from .losses import Loss, parse_loss
from .noise import NoiseDraws, SourceContext, get_source, random_directions, source_names
from .probe_plan import cost_plan, memory_plan
from .probe_settings import ProbeSettings, fits_model_iv
from .progress import ProbeProgress, cost_message, tick
from .rows import NpyRows

__all__ = ["NoiseSource", "ProbeSettings", "ProbeResult", "probe", "run_probe"]

logger = logging.getLogger(__name__)


#: Noise sources a probe can sample: the registered ones (:mod:`.noise.registry`), as an enum.
NoiseSource = StrEnum("NoiseSource", [(n.upper().replace("-", "_"), n) for n in source_names()])
NoiseSource.__doc__ = "Noise sources a probe can sample (the registered ones at import)."


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class ProbeResult:
    """Tables of one probe (schema v1) plus diagnostics.

    Attributes
    ----------
    eigen : DataFrame
        schema.EIGEN rows: step, rank, eigenvalue, residual (and vector when logged).
    noise : DataFrame
        schema.NOISE rows: step, source, basis, direction, sample, value.
    exact_variance : DataFrame or None
        schema EXACT_VARIANCE rows (sgd from per-sample gradients and isotropic by construction,
        both exact: ``se`` null; dropout the unbiased two-mask estimate with its standard error
        ``se``, :attr:`~.noise.DropoutPairMoments.variance_se`).
    flatness : DataFrame
        schema FLATNESS rows (lambda_max, hessian_trace, tr_hc, tr_c, rho, tr_c_exact).
    top_vector : ndarray
        The top eigenvector (warm start ``v0`` for the next probe).
    n_hvp : int
        Hessian-vector products spent (eigensolver, residuals, Hutchinson, Tr(HC)).
    timings : dict
        Seconds per stage (``hessian``, each source, ``flatness``, ``total``).
    info : dict
        Extras: n_params (trainable), n_train, loss_value, sources' traces, chunk sizes,
        ``dropout_sites`` (name, kind, call, drop_prob, where) and ``dropout_skipped`` (p = 0).
    diagonal : DataFrame or None
        schema DIAGONAL rows (``diag_params``; added by the probe runner, :mod:`.diagonal`).
    """

    eigen: pd.DataFrame
    noise: pd.DataFrame
    exact_variance: pd.DataFrame | None
    flatness: pd.DataFrame
    top_vector: np.ndarray
    n_hvp: int
    timings: dict
    info: dict = field(default_factory=dict)
    diagonal: pd.DataFrame | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        """Optional tables by file name, for ``io.write_run(..., tables=...)``."""
        out = {schema.FLATNESS.file: self.flatness}
        if self.exact_variance is not None:
            out[schema.EXACT_VARIANCE.file] = self.exact_variance
        if self.diagonal is not None:
            out[schema.DIAGONAL.file] = self.diagonal
        return out

    def to_frame(self) -> pd.DataFrame:
        """One-row summary: step, n_params, lambda_max, hessian_trace, n_hvp, seconds."""
        f = self.flatness.set_index("quantity")["estimate"]
        return pd.DataFrame([{"step": int(self.eigen["step"].iloc[0]), "n_params": self.info.get("n_params"),
                              "lambda_max": float(f.get("lambda_max", np.nan)),
                              "hessian_trace": float(f.get("hessian_trace", np.nan)),
                              "n_hvp": self.n_hvp, "seconds": self.timings.get("total")}])


def _noise_frame(step: int, draws: NoiseDraws, k: int, m: int) -> pd.DataFrame:
    K, d = draws.values.shape
    basis = np.array(["hessian"] * k + ["random"] * m, dtype=object)
    direction = np.concatenate([np.arange(k), np.arange(m)]).astype(np.int64)
    return pd.DataFrame({
        "step": np.full(K * d, step, dtype=np.int64),
        "source": draws.source,
        "basis": np.tile(basis, K),
        "direction": np.tile(direction, K),
        "sample": np.repeat(np.arange(K, dtype=np.int64), d),
        "value": draws.values.reshape(-1).astype(np.float64),
    })


def _exact_frame(step: int, draws: NoiseDraws, k: int, m: int) -> pd.DataFrame:
    df = pd.DataFrame({
        "step": np.full(k + m, step, dtype=np.int64),
        "source": draws.source,
        "basis": ["hessian"] * k + ["random"] * m,
        "direction": np.concatenate([np.arange(k), np.arange(m)]).astype(np.int64),
        "variance": draws.exact_variance.astype(np.float64),
        # the standard error of an estimated exact variance (dropout's two-mask estimate); null when exact
        "se": (np.full(k + m, np.nan) if draws.exact_variance_se is None
               else np.asarray(draws.exact_variance_se, dtype=np.float64)),
    })
    if draws.exact_variance_groups is not None:  # per direction its J group contributions (dropout)
        df["group_variance"] = list(np.asarray(draws.exact_variance_groups, dtype=np.float64).T)
    return df


def _block_directions(op: HessianOperator, pblocks: list[ParameterBlock], V: torch.Tensor, layout: list,
                      settings: ProbeSettings, generator: torch.Generator, ncv: int | None = None):
    """Per block: top ``min(top_k, D_b)`` eigenpairs of H_bb (eigenvectors embedded in R^D) and
    ``n_random`` random unit directions on the block, appended to the directions ``V``."""
    D, m = op.n_params, settings.n_random
    cols, beigs = [V], []
    start = V.shape[1]
    for b in pblocks:
        be = top_eigenpairs(BlockHessianOperator(op, b.index), k=min(settings.top_k, b.size), tol=settings.eig_tol,
                            generator=generator, ncv=ncv)
        Vb = embed(torch.from_numpy(np.ascontiguousarray(be.eigenvectors)).to(op.pm.dtype), b.index, D)
        be = EigenResult(eigenvalues=be.eigenvalues, eigenvectors=Vb.cpu().numpy(), residuals=be.residuals,
                         n_hvp=be.n_hvp, method=be.method, seconds=be.seconds, extra=be.extra)
        Rb = block_random_directions(b.index, D, m, generator=generator, dtype=op.pm.dtype)
        cols += [Vb.to(op.pm.device), Rb.to(op.pm.device)]
        layout = [*layout, (b.name, be.k, m, start)]
        start += be.k + m
        beigs.append((b, be))
    return torch.cat(cols, dim=1), layout, beigs


def _split(draws: NoiseDraws, layout: list):
    """``(block, k_b, m, draws restricted to the block's columns)`` for each entry of ``layout``."""
    for name, kb, mb, c0 in layout:
        ev = None if draws.exact_variance is None else draws.exact_variance[c0:c0 + kb + mb]
        es = None if draws.exact_variance_se is None else draws.exact_variance_se[c0:c0 + kb + mb]
        eg = None if draws.exact_variance_groups is None else draws.exact_variance_groups[:, c0:c0 + kb + mb]
        yield name, kb, mb, replace(draws, values=draws.values[:, c0:c0 + kb + mb], exact_variance=ev,
                                    exact_variance_se=es, exact_variance_groups=eg)


def _release(draws: NoiseDraws) -> NoiseDraws:
    """The draws without their D-sized parts (full vectors, dropout's group sums), once Tr(HC) is done."""
    pairs = draws.extra.get("pairs")
    extra = draws.extra if pairs is None else {**draws.extra, "pairs": replace(pairs, W=None)}
    # a fresh empty tensor: a view (full[:0]) would keep the whole storage alive
    return replace(draws, full=draws.full.new_zeros((0, draws.full.shape[1])), extra=extra)


def _probe_iv(model, loss, X, y, settings, step, generator, v0):
    if not isinstance(settings, ProbeSettings):
        raise InputError(f"`settings` must be a ProbeSettings; got {type(settings).__name__}.")
    if not _is_int(step) or step < 0:
        raise InputError(f"`step` must be an integer >= 0; got {step!r}.")
    if not isinstance(generator, torch.Generator):
        raise InputError(f"`generator` must be a torch.Generator; got {type(generator).__name__}.")
    if not isinstance(model, nn.Module):
        raise InputError(f"`model` must be a torch.nn.Module; got {type(model).__name__}.")
    if not isinstance(X, (torch.Tensor, NpyRows)) or not isinstance(y, torch.Tensor):
        raise InputError("`X` must be a torch tensor or NpyRows (inputs read from a .npy file by chunk) "
                         "and `y` a torch tensor.")
    if v0 is not None and not isinstance(v0, np.ndarray):
        raise InputError(f"`v0` must be a numpy array or None; got {type(v0).__name__}.")
    fits_model_iv(sources=settings.sources, batch_size=settings.batch_size, top_k=settings.top_k, n_train=len(X),
                  n_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                  diag_params=settings.diag_params)
    return parse_loss(loss)


@contextlib.contextmanager
def _no_mha_fastpath():
    """Keep ``nn.MultiheadAttention``/``TransformerEncoderLayer`` off their fused inference kernel
    for the probe (restored after): with no gradient recorded (the forward-mode JVPs of the
    per-sample pass) they would take it, and forward AD cannot differentiate it. The switch is
    process-wide, like ``sdpa_kernel``: run concurrent probes in processes (as the executors do),
    not in threads of one process."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    old = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(old)


#: (D, n, settings) whose long-probe cost warning was given in this process
_COST_WARNED: set = set()

def _count_hvps(op: HessianOperator) -> None:
    """Report the operator's HVPs to the progress display as they happen (instance wrappers)."""
    last = [op.n_hvp]

    def wrap(f):
        def g(*a, **k):
            out = f(*a, **k)
            tick(op.n_hvp - last[0], unit="HVPs")
            last[0] = op.n_hvp
            return out
        return g

    op.matvec, op.matmat = wrap(op.matvec), wrap(op.matmat)


def probe(model: nn.Module, loss: Loss | str, X: torch.Tensor, y: torch.Tensor, *,
          settings: ProbeSettings, step: int, generator: torch.Generator,
          v0: np.ndarray | None = None, progress: bool = False) -> ProbeResult:
    """Probe ``model`` at its current parameters on the training set ``(X, y)``.

    Steps: (1) top-``k`` eigenpairs of the Hessian of R_S (dropout off) by eigsh on
    double-backward HVPs, warm-started from ``v0``; (2) ``m`` random unit directions from
    ``generator``; (3) ``K`` draws of each noise source projected on the ``k + m``
    directions; (4) deflated Hutchinson Tr(H) and, per source, centred Tr(HC), Tr(C), rho.
    The caller's model is not modified (the probe works on a copy).

    Parameters
    ----------
    model : nn.Module
        No BatchNorm (refused with :class:`ConfigError`). Its dropout is off for the Hessian
        and SGD noise (eval mode); every dropout it applies in train mode (``nn.Dropout``,
        ``F.dropout``, attention dropout) defines the dropout source (unless
        ``settings.dropout_layers`` is given). Parameters with ``requires_grad=False`` are
        constants: the probe measures the trainable ones.
    loss : Loss, str or callable
        ``"mse"`` (``(1/2n) sum ||f(x)-y||^2`` -- not ``nn.MSELoss``, which averages over the
        outputs too and has no 1/2: its H is ``2/m`` times ours for ``m`` outputs),
        ``"cross_entropy"``, or a callable ``loss(output, target)`` returning per-sample losses
        ``(n,)`` (the training loss is their mean; it receives the raw output, e.g. a dict).
        Built-in losses take a dict output's ``"logits"`` entry.
    X, y : torch.Tensor
        Full training set (``y`` integer labels for cross-entropy). ``X`` may be an
        :class:`~varprinciple.collect.rows.NpyRows` (inputs in a ``.npy`` file, read a chunk of
        rows at a time), so that memory does not grow with n when the budget makes the probe chunk.
    settings : ProbeSettings
    step : int
        Training step recorded in every table.
    generator : torch.Generator
        The probe's own random stream (directions, subsets, masks, Gaussians, probes).
    v0 : ndarray, optional
        Warm start for eigsh (the previous probe's ``top_vector``).
    progress : bool
        Show a tqdm bar per stage with its units of work (HVPs, per-sample passes, draws), a live
        count and the probe's ETA (:mod:`.progress`); else log lines at INFO.

    Returns
    -------
    ProbeResult

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(40, 3, generator=g); y = torch.randn(40, 1, generator=g)
    >>> s = ProbeSettings(top_k=2, n_samples=50, sources=("sgd", "isotropic"), batch_size=8,
    ...                   n_random=2, hutchinson_probes=8, tr_hc_samples=10)
    >>> res = probe(nn.Linear(3, 1), "mse", X, y, settings=s, step=0, generator=g)
    >>> len(res.eigen), len(res.noise), sorted(res.noise.source.unique())
    (2, 400, ['isotropic', 'sgd'])
    """
    loss = _probe_iv(model, loss, X, y, settings, step, generator, v0)
    res = run_probe(model, loss, X, y, settings=settings, step=step, generator=generator, v0=v0,
                    progress=progress)
    # the per-parameter diagonals when asked for, after the probe, on the caller's stream
    return with_diagonal(res, model, loss, X, y, step=step, settings=settings, generator=generator)


def run_probe(model: nn.Module, loss: Loss | str, X, y: torch.Tensor, *, settings: ProbeSettings, step: int,
              generator: torch.Generator, v0: np.ndarray | None = None, progress: bool = False) -> ProbeResult:
    """:func:`probe` without its argument checks, for callers that made them at their own boundary
    (the run's assembly in ``collect``; ``check_probe_args`` of the own-model API): the probe
    runner (:mod:`.probe_runner`) calls this."""
    loss = parse_loss(loss)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    prog = ProbeProgress(step, bar=progress)
    srcs: dict = {}
    stack = contextlib.ExitStack()
    try:
        t0 = time.perf_counter()
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))  # double-differentiable attention (HVPs)
        stack.enter_context(_no_mha_fastpath())
        pm = ProbedModel(model, loss, X, y, dtype=resolve_dtype(settings.dtype),
                         frozen_batchnorm=settings.frozen_batchnorm)
        for name in settings.sources:  # each source validates and sets up before any expensive stage
            srcs[name] = get_source(name)
            srcs[name].prepare(pm, settings)
        sites = getattr(srcs.get("dropout"), "sites", None)
        D = pm.n_params
        pblocks = None if settings.blocks is None else resolve_blocks(settings.blocks, pm.names, pm.numels)
        mplan = memory_plan(pm, settings, sites, pblocks)  # refuses here when no setting fits the budget
        op = HessianOperator(pm, chunk=mplan.hessian_chunk)
        op.columns = mplan.columns
        plan = cost_plan(pm, op, settings, sites, pblocks, mplan, warm=v0 is not None)
        prog.set_plan(plan["stages"])
        _count_hvps(op)
        logger.info("probe step %d plan: %s", step, plan["summary"])
        msg = cost_message(step, plan)
        if msg is not None:  # once per model size and settings in a process; later probes at INFO
            key = (D, pm.n, settings)
            (logger.info if key in _COST_WARNED else logger.warning)(msg)
            _COST_WARNED.add(key)
        with prog.stage("hessian"):
            eig = top_eigenpairs(op, k=settings.top_k, tol=settings.eig_tol, v0=v0, generator=generator,
                                 ncv=mplan.ncv)
        timings["hessian"] = time.perf_counter() - t0
        k, m = eig.k, settings.n_random
        Vh = torch.from_numpy(np.ascontiguousarray(eig.eigenvectors)).to(pm.dtype).to(pm.device)
        R = random_directions(D, m, generator=generator, dtype=pm.dtype).to(pm.device)
        # one independent stream per stage (always all four, in this order): a stage's draws do not
        # depend on which other sources run nor on how much randomness their chunking consumed
        gens = {name: torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
                for name in [*source_names(), "flatness"]}
        V = torch.cat([Vh, R], dim=1)
        del Vh, R
        if V.dtype == torch.float64 and V.device.type == "cpu":  # one copy of the eigenvectors: a view of V
            eig = replace(eig, eigenvectors=V[:, :k].numpy())
        layout = [(None, k, m, 0)]  # (block, Hessian directions, random directions, first column of V)
        beigs: list[tuple[ParameterBlock, EigenResult]] = []
        if pblocks is not None:  # after every draw of the whole-network probe: its streams are unchanged
            t0 = time.perf_counter()
            gb = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            with prog.stage("blocks"):
                V, layout, beigs = _block_directions(op, pblocks, V, layout, settings, gb, ncv=mplan.ncv)
            timings["blocks"] = time.perf_counter() - t0
        n_full = min(settings.tr_hc_samples, settings.n_samples)
        # Tr(H) first, then each source followed by its Tr(HC): one source's full draws held at a time
        t0 = time.perf_counter()
        with prog.stage("flatness"):
            trh = hutchinson_trace(op, n_probes=settings.hutchinson_probes, generator=gens["flatness"],
                                   eigenvalues=eig.eigenvalues, eigenvectors=V[:, :k])
        timings["flatness"] = time.perf_counter() - t0
        draws: dict[str, NoiseDraws] = {}
        aligned: dict = {}
        order = sorted(settings.sources, key=lambda name: srcs[name].after_others)  # stable
        for src in order:
            t0 = time.perf_counter()
            op.drop_graph()  # the draws need no products; Tr(HC) rebuilds the graph
            ctx = SourceContext(pm=pm, op=op, directions=V, generator=gens[src], n_full=n_full, draws=draws,
                                settings=replace(settings, memory_budget_mb=mplan.rooms_mb[src]))
            with prog.stage(src):
                draws[src] = srcs[src].sample(ctx)
                t1 = time.perf_counter()
                aligned[src] = srcs[src].alignment(op, draws[src], trh)
                t_align = time.perf_counter() - t1
            draws[src] = _release(draws[src])
            timings[src] = time.perf_counter() - t0 - t_align
            timings["flatness"] += t_align  # Tr(H) and every Tr(HC), as before
        aligns = [aligned[s] for s in settings.sources if aligned[s] is not None]
        exact_tr = {s: d.trace for s, d in draws.items() if d.trace_exact}
        exact_se = {s: d.extra["pairs"].trace_se for s, d in draws.items() if d.extra.get("pairs") is not None}
        exact_tr.update({s: draws[s].trace for s in exact_se})
        flat = flatness_frame(step=step, lambda_max=float(eig.eigenvalues[0]), trace_h=trh,
                              alignments=aligns, exact_traces=exact_tr, exact_trace_se=exact_se)
    finally:
        stack.close()
        for src in srcs.values():
            src.close()
    store = D <= settings.store_vectors_max_params
    eigen_df = eig.to_frame(step=step, store_vectors=store)
    if pblocks is None:
        noise_df = pd.concat([_noise_frame(step, draws[s], k, m) for s in settings.sources], ignore_index=True)
        ev_parts = [_exact_frame(step, draws[s], k, m) for s in settings.sources
                    if draws[s].exact_variance is not None]
    else:
        eigen_df = pd.concat([eigen_df.assign(block=None)] + [
            be.to_frame(step=step, store_vectors=store).assign(block=b.name) for b, be in beigs], ignore_index=True)
        noise_df = pd.concat([_noise_frame(step, part, kb, mb).assign(block=name)
                              for s in settings.sources for name, kb, mb, part in _split(draws[s], layout)],
                             ignore_index=True)
        ev_parts = [_exact_frame(step, part, kb, mb).assign(block=name) for s in settings.sources
                    if draws[s].exact_variance is not None for name, kb, mb, part in _split(draws[s], layout)]
    ev_df = pd.concat(ev_parts, ignore_index=True) if ev_parts else None
    timings["total"] = time.perf_counter() - t_all
    info = {"n_params": D, "n_train": pm.n, "loss_value": op.loss_value, "plan": plan,
            "dropout_sites": srcs["dropout"].info()["dropout_sites"] if "dropout" in srcs else [],
            "dropout_skipped": srcs["dropout"].info()["dropout_skipped"] if "dropout" in srcs else [],
            "gradient_norm": float(op.gradient.norm()),
            **({"blocks": [{"name": b.name, "params": list(b.params), "n_params": b.size, "top_k": be.k,
                            "method": be.method, "n_hvp": be.n_hvp} for b, be in beigs]}
               if pblocks is not None else {}),
            "n_hvp_eigensolver": int(eig.extra.get("n_hvp_solver", 0)),
            "traces": {s: d.trace for s, d in draws.items()},
            "noise_extra": {s: {k2: v for k2, v in d.extra.items() if k2 not in ("subsets", "pairs")}
                            for s, d in draws.items()}}
    logger.info("probe step %d: lambda_max=%.4g, %d HVPs, %.2fs", step, eig.eigenvalues[0], op.n_hvp,
                timings["total"])
    return ProbeResult(eigen=eigen_df, noise=noise_df, exact_variance=ev_df, flatness=flat,
                       top_vector=np.asarray(eig.eigenvectors[:, 0], dtype=np.float64).copy(),
                       n_hvp=int(op.n_hvp), timings=timings, info=info)
