"""The weight trajectory late in training: split-half PCA, variances and landscape widths.

Feng & Tu (PNAS 2021) take the PCA of the weights over a late window of SGD training and
relate the variance σ_i² along PC i to the landscape width F_i along it. Definitions are in
docs/flatness.md; in short:

* after training stops, training continues for ``window`` steps and the chosen parameter
  subset is snapshotted every ``every`` steps (:func:`collect_trajectory`);
* PCs are estimated on the first half of the snapshots and σ_i², the loss profile and F_i
  (threshold factors e and 2, around the second half's mean weights) are measured on the
  second half (:func:`analyse_trajectory`, numpy only, usable on any trajectory);
* PC1 (``component`` 0) is flagged as drift; ``variance_short`` is σ_i² over half the
  measuring window;
* the random-walk control (``dynamics="random_walk"``) replaces the training steps of the
  window by isotropic Gaussian steps with no gradient, by default of the size of the SGD
  noise of the run's batch size (:func:`matched_walk_sd`): the same analysis then shows what
  pure diffusion from the same weights produces (σ_i² ∝ i^(-2), ψ read against it).

Snapshots are kept in memory while they fit ``max_memory_mb``; otherwise the first half
feeds an incremental PCA (:class:`sklearn.decomposition.IncrementalPCA`) and the second half
is projected as it arrives, so memory is O(D · (k + batch)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..errors import ConfigError
from .trajectory_analysis import (PROFILES_FILE, PROJECTIONS_FILE, THRESHOLDS, TRAJECTORY_FILE, SnapshotPCA,
                                  TrajectoryResult, analyse_trajectory, landscape_width)

__all__ = ["TrajectoryResult", "SnapshotPCA", "landscape_width", "analyse_trajectory",
           "collect_trajectory", "parameter_subset", "matched_walk_sd", "DYNAMICS", "THRESHOLDS",
           "TRAJECTORY_FILE", "PROJECTIONS_FILE", "PROFILES_FILE", "LOSS_TREND_MAX", "window_loss_trend",
           "window_n_eff_min"]

logger = logging.getLogger(__name__)

#: What moves the weights in the window: the run's own training steps, or the random-walk control.
DYNAMICS = ("train", "random_walk")


# ------------------------------------------------------------------------------- torch side


def parameter_subset(model, names: Sequence[str] | None) -> list[tuple[str, object]]:
    """``(name, parameter)`` of the subset (all parameters when ``names`` is None).

    Raises
    ------
    ConfigError
        Naming an unknown parameter and listing the model's parameter names.
    """
    named = dict(model.named_parameters())
    if names is None:
        return list(named.items())
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ConfigError(f"[trajectory] params: unknown parameter {unknown[0]!r}; the model has "
                          f"{', '.join(named)}")
    return [(n, named[n]) for n in names]


def _subset_loss_fn(model, subset, loss, X, y):
    import torch

    from .train import evaluate
    params = [p for _, p in subset]

    def loss_fn(vec: np.ndarray) -> float:
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(
                    torch.as_tensor(vec, dtype=params[0].dtype, device=params[0].device), params)
            return evaluate(model, loss, X, y, None)[0]
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    return loss_fn


#: Relative change of the training loss across the window (linear trend x window / mean loss)
#: above which the window is flagged as not stationary (run.json ``trajectory.loss_level``).
LOSS_TREND_MAX = 0.1


def _settle(train_steps, loss_now, *, settle_steps: int, plateau_tol: float | None, plateau_steps: int,
            max_settle_steps: int) -> dict:
    """Train ``settle_steps`` steps, then (with ``plateau_tol``) blocks of ``plateau_steps``
    until the loss changed by less than ``plateau_tol`` (relative) over the last block, at
    most ``max_settle_steps`` steps in all. Returns the record of what was done."""
    done = 0
    if settle_steps:
        train_steps(settle_steps)
        done += settle_steps
    reached = None
    if plateau_tol is not None:
        reached = False
        prev = loss_now()
        while done + plateau_steps <= max_settle_steps:
            train_steps(plateau_steps)
            done += plateau_steps
            cur = loss_now()
            if prev > 0 and abs(cur - prev) / prev < plateau_tol:
                reached = True
                break
            prev = cur
        if not reached:
            logger.warning("trajectory: the loss did not level (relative change >= %g per %d steps) within "
                           "%d settle steps; the window starts anyway", plateau_tol, plateau_steps, done)
    return {"settle_steps": done, "plateau_reached": reached}


def collect_trajectory(model, loss, X, y, *, method: str, lr: float, batch_size: int | None,
                       generator, window: int, every: int = 10, params: Sequence[str] | None = None,
                       n_components: int = 20, profile_points: int = 21, max_memory_mb: int = 1024,
                       momentum: float = 0.0, weight_decay: float = 0.0, start_step: int = 0,
                       progress: bool = False, sampler: str = "epochs", dynamics: str = "train",
                       walk_sd: float | None = None, settle_steps: int = 0, plateau_tol: float | None = None,
                       plateau_steps: int = 500, max_settle_steps: int = 20000,
                       loss_points: int = 11, window_n_eff: float | None = None,
                       max_window: int = 200000) -> TrajectoryResult:
    """Train ``window`` more steps, snapshot the subset every ``every`` steps, analyse.

    ``model`` is trained in place (pass a copy to keep the end-of-training weights).
    Steps in the tables count from the end of training proper (``start_step``).
    ``sampler`` is :func:`~varprinciple.collect.train.train`'s. With
    ``dynamics="random_walk"`` the window's steps are ``theta += walk_sd * N(0, I)`` over all
    trainable parameters, with no gradient (the random-walk control; ``walk_sd`` required,
    e.g. from :func:`matched_walk_sd`); ``method``, ``lr`` and ``batch_size`` are then unused.

    Before the window the model trains (its own method) ``settle_steps`` steps and then,
    with ``plateau_tol``, blocks of ``plateau_steps`` until the full-batch training loss
    changed by less than ``plateau_tol`` (relative) over the last block (at most
    ``max_settle_steps`` in all): the window starts where the loss has levelled. Inside the
    window the full-batch loss is evaluated at ``loss_points`` evenly spaced snapshots; the
    result's ``window`` record holds the settle steps, whether the plateau was reached,
    the first and last of these losses and ``loss_change`` = the linear trend across the
    window relative to the mean loss (``loss_level`` false above ``LOSS_TREND_MAX``).

    With ``window_n_eff`` the window length follows the measured relaxation time: when the
    smallest n_eff over the non-drift PCs (:func:`window_n_eff_min`) is below it, a new
    window 1.2 x window_n_eff / n_eff times longer (at most ``max_window`` steps) follows,
    the short one counting as settling; ``window_tries`` and ``window_n_eff_min`` are
    recorded.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(64, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, 1, dtype=torch.float64) + 0.3 * torch.randn(64, 1, generator=g, dtype=torch.float64)
    >>> model = torch.nn.Linear(3, 1).double()
    >>> res = collect_trajectory(model, "mse", X, y, method="sgd", lr=0.05, batch_size=8, generator=g,
    ...                          window=400, every=10, n_components=3, profile_points=5)
    >>> list(res.pcs["component"]), res.pcs["width"].notna().all()
    ([0, 1, 2], np.True_)
    """
    from .train import evaluate, train
    subset = parameter_subset(model, params)
    D = sum(p.numel() for _, p in subset)
    import torch

    from .losses import Loss
    loss_obj = Loss(loss) if isinstance(loss, str) else loss

    def loss_now() -> float:
        return float(evaluate(model, loss_obj, X, y, None)[0])

    def train_steps(n: int) -> None:
        train(model, loss, X, y, method=method, lr=lr, steps=n, batch_size=batch_size, generator=generator,
              momentum=momentum, weight_decay=weight_decay, log_every=max(n, 1), progress=False,
              sampler=sampler)

    if dynamics not in DYNAMICS:
        raise ConfigError(f"[trajectory] dynamics: must be one of {list(DYNAMICS)}; got {dynamics!r}")
    if dynamics == "random_walk" and (walk_sd is None or not (math.isfinite(walk_sd) and walk_sd > 0)):
        raise ConfigError(f"[trajectory] walk_sd: the random walk needs a step sd > 0; got {walk_sd!r}")
    settle = _settle(train_steps, loss_now, settle_steps=settle_steps, plateau_tol=plateau_tol,
                     plateau_steps=plateau_steps, max_settle_steps=max_settle_steps)
    label = "all" if params is None else ",".join(params)

    def one_window(length: int, start: int) -> TrajectoryResult:
        snap_steps = list(range(0, length + 1, every))
        n_first = len(snap_steps) // 2
        streaming = len(snap_steps) * D * 8 > max_memory_mb * 2**20
        if streaming:
            logger.info("trajectory: %d snapshots of %d parameters exceed %d MB; incremental PCA",
                        len(snap_steps), D, max_memory_mb)
        pca = SnapshotPCA(n_first=n_first, n_components=n_components, streaming=streaming)
        idx = np.unique(np.linspace(0, len(snap_steps) - 1, max(2, min(loss_points, len(snap_steps)))).astype(int))
        loss_at = {snap_steps[i] for i in idx}
        window_loss: list[tuple[int, float]] = []

        def snap(step: int, mdl) -> None:
            pca.add(torch.cat([p.detach().reshape(-1) for _, p in subset]).double().cpu().numpy())
            if step in loss_at:
                window_loss.append((step, loss_now()))

        if dynamics == "random_walk":
            _random_walk(model, length, snap_steps, snap, walk_sd, generator)
        else:
            train(model, loss, X, y, method=method, lr=lr, steps=length, batch_size=batch_size,
                  generator=generator, momentum=momentum, weight_decay=weight_decay,
                  log_every=max(length, 1), probe_steps=snap_steps, on_probe=snap, progress=progress,
                  sampler=sampler)
        steps2 = [start + s for s in snap_steps[n_first:]]
        res = analyse_trajectory(pca, _subset_loss_fn(model, subset, loss, X, y), steps=steps2,
                                 profile_points=profile_points, params=label)
        return replace(res, window={"window_start_step": int(start), "window_used": int(length),
                                    **window_loss_trend(window_loss)})

    start = start_step + settle["settle_steps"]
    res = one_window(window, start)
    tries = [window]
    if window_n_eff is not None:
        while True:
            n_eff = window_n_eff_min(res)
            if n_eff >= window_n_eff or tries[-1] >= max_window:
                break
            # n_eff grows linearly with the window: aim 20 % above the target
            new = min(max_window, int(math.ceil(tries[-1] * 1.2 * window_n_eff / max(n_eff, 0.5) / every)) * every)
            if new <= tries[-1]:
                break
            logger.info("trajectory: n_eff_min %.1f < %g over %d steps; a new window of %d steps follows",
                        n_eff, window_n_eff, tries[-1], new)
            start += tries[-1]                      # the short window counts as settling
            res = one_window(new, start)
            tries.append(new)
        res = replace(res, window={**res.window, "window_tries": tries, "window_n_eff_min": window_n_eff_min(res)})
    return replace(res, window={**settle, **res.window})


def window_n_eff_min(res: TrajectoryResult) -> float:
    """Smallest effective number of independent snapshots over the non-drift PCs of a
    window (:func:`varprinciple.stats.psi.stationary_variance` on its projections)."""
    from ..stats.psi import stationary_variance
    k = len(res.pcs)
    P = res.projections.sort_values(["step", "component"])["value"].to_numpy().reshape(-1, k)
    keep = ~res.pcs.sort_values("component")["drift"].to_numpy(bool)
    return float(stationary_variance(P[:, keep]).n_eff.min()) if keep.any() else math.nan


def window_loss_trend(points: Sequence[tuple[int, float]]) -> dict:
    """``loss_start``, ``loss_end``, ``loss_change`` (OLS trend of loss on step x the span,
    over the mean loss) and ``loss_level`` (|loss_change| <= ``LOSS_TREND_MAX``) of the
    window's ``(step, loss)`` points.

    Examples
    --------
    >>> round(window_loss_trend([(0, 1.0), (50, 0.8), (100, 0.6)])["loss_change"], 6)
    -0.5
    """
    if len(points) < 2:
        return {"loss_start": None, "loss_end": None, "loss_change": None, "loss_level": None}
    st, lv = (np.asarray(v, dtype=float) for v in zip(*points))
    slope = np.polyfit(st, lv, 1)[0]
    change = float(slope * (st[-1] - st[0]) / lv.mean()) if lv.mean() > 0 else math.nan
    return {"loss_start": float(lv[0]), "loss_end": float(lv[-1]),
            "loss_change": change if math.isfinite(change) else None,
            "loss_level": bool(abs(change) <= LOSS_TREND_MAX) if math.isfinite(change) else None}


def _random_walk(model, window: int, snap_steps: Sequence[int], snap, sd: float, generator) -> None:
    """``window`` isotropic Gaussian steps of per-coordinate sd ``sd`` on every trainable
    parameter, ``snap(step, model)`` at ``snap_steps`` (before that step's move)."""
    import torch
    params = [p for p in model.parameters() if p.requires_grad]
    at = set(snap_steps)
    for step in range(window + 1):
        if step in at:
            snap(step, model)
        if step == window:
            break
        with torch.no_grad():
            for p in params:
                z = torch.randn(p.shape, generator=generator, dtype=torch.float64, device="cpu")
                p.add_(z.to(device=p.device, dtype=p.dtype), alpha=sd)


def check_walk_batch(batch_size: int, n: int) -> None:
    """Refuse a random-walk default step that cannot exist: it matches the SGD noise of batch
    size ``batch_size``, which needs ``1 <= batch_size < n`` (used by :func:`matched_walk_sd`
    and by collect's pre-flight check)."""
    if not 1 <= batch_size < n:
        raise ConfigError(f"[trajectory] walk_sd: the default matches the SGD noise of batch size "
                          f"{batch_size}, which must be in [1, {n}) (the training samples); set walk_sd")


def matched_walk_sd(model, loss, X, y, *, lr: float, batch_size: int) -> float:
    """Per-coordinate sd of a random walk whose steps carry the SGD noise of one update.

    One SGD update is ``-lr * (g + xi)`` with ``E[xi xi^T] = C_B`` (B drawn without
    replacement, DESIGN.md); the walk keeps the noise, drops the gradient and makes it
    isotropic with the same total variance: ``sd = lr * sqrt(Tr(C_B) / D)`` at the current
    weights, ``Tr(C_B) = (n - B)/(B (n - 1)) * (1/n) * sum_i ||g_i - g||^2`` computed exactly
    from per-sample gradients (float64).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(50, 3, generator=g, dtype=torch.float64)
    >>> y = X @ torch.ones(3, 1, dtype=torch.float64) + torch.randn(50, 1, generator=g, dtype=torch.float64)
    >>> model = torch.nn.Linear(3, 1).double()
    >>> matched_walk_sd(model, "mse", X, y, lr=0.1, batch_size=10) > 0
    True
    """
    import torch

    from ._model import ProbedModel
    from .losses import Loss
    from .noise.sgd import _centred_sq_sum, sgd_variance_factor
    pm = ProbedModel(model, Loss(loss) if isinstance(loss, str) else loss, X, y, dtype=torch.float64)
    check_walk_batch(batch_size, pm.n)
    leaves = {k: p.detach().clone().requires_grad_(True) for k, p in pm.params.items()}
    with torch.enable_grad():
        grads = torch.autograd.grad(pm.batch_loss(leaves, pm.X, pm.y), list(leaves.values()),
                                    allow_unused=True, materialize_grads=True)
    gradient = torch.cat([t.reshape(-1) for t in grads]).detach()
    trace = sgd_variance_factor(pm.n, batch_size) * _centred_sq_sum(pm, gradient) / pm.n
    return float(lr * math.sqrt(trace / pm.n_params))
