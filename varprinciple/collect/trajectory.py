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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .. import schema
from ..errors import ConfigError

__all__ = ["TrajectoryResult", "SnapshotPCA", "landscape_width", "analyse_trajectory",
           "collect_trajectory", "parameter_subset", "matched_walk_sd", "DYNAMICS", "THRESHOLDS",
           "TRAJECTORY_FILE", "PROJECTIONS_FILE", "PROFILES_FILE", "LOSS_TREND_MAX", "window_loss_trend",
           "window_n_eff_min"]

logger = logging.getLogger(__name__)

TRAJECTORY_FILE = schema.TRAJECTORY.file
PROJECTIONS_FILE = schema.TRAJECTORY_PROJECTIONS.file
PROFILES_FILE = schema.LOSS_PROFILES.file

#: What moves the weights in the window: the run's own training steps, or the random-walk control.
DYNAMICS = ("train", "random_walk")

#: Threshold factors f of the widths: column ``width`` (f = e, Feng & Tu) and ``width_2``.
THRESHOLDS = {"width": math.e, "width_2": 2.0}


def landscape_width(loss_fn: Callable[[np.ndarray], float], center: np.ndarray, direction: np.ndarray, *,
                    factor: float = math.e, loss0: float | None = None, t0: float = 1e-3,
                    t_max: float = 1e3, rtol: float = 1e-4) -> tuple[float, float]:
    """Distances to the nearest points on either side where the loss reaches ``factor · L₀``.

    Doubling from ``t0`` until the loss is ``>= factor · L₀`` (or ``t > t_max``: NaN,
    censored), then bisection to relative precision ``rtol``. The width is
    ``t_minus + t_plus``.

    Returns
    -------
    (t_minus, t_plus) : tuple of float
        NaN on a side where the threshold was not reached, or when L₀ <= 0.

    Examples
    --------
    A quadratic L = c + ½ λ t² has half-width sqrt(2 (f − 1) c / λ) on each side:

    >>> import math, numpy as np
    >>> c, lam = 0.5, 4.0
    >>> loss = lambda th: c + 0.5 * lam * float(th @ th)
    >>> tm, tp = landscape_width(loss, np.zeros(3), np.array([1.0, 0, 0]), factor=2.0)
    >>> round(tm + tp, 4), round(2 * math.sqrt(2 * c / lam), 4)
    (1.0, 1.0)
    """
    center = np.asarray(center, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    L0 = float(loss_fn(center)) if loss0 is None else float(loss0)
    if not (L0 > 0 and math.isfinite(L0)):
        return math.nan, math.nan
    level = factor * L0
    out = []
    for sign in (-1.0, 1.0):
        def f(t: float) -> float:
            return float(loss_fn(center + sign * t * direction))
        lo, hi = 0.0, float(t0)
        while f(hi) < level:
            lo, hi = hi, 2 * hi
            if hi > t_max:
                hi = math.nan
                break
        if math.isnan(hi):
            out.append(math.nan)
            continue
        while hi - lo > rtol * hi:
            mid = 0.5 * (lo + hi)
            if f(mid) >= level:
                hi = mid
            else:
                lo = mid
        out.append(0.5 * (lo + hi))
    return out[0], out[1]


class SnapshotPCA:
    """Split-half PCA of a stream of snapshots: PCs from the first half, projections of the second.

    ``add(x)`` takes snapshots in time order (the first ``n_first`` go to the PCA). When
    ``streaming`` is false, the first half is kept and decomposed exactly (thin SVD);
    otherwise it feeds an :class:`~sklearn.decomposition.IncrementalPCA` in batches of
    ``batch`` snapshots. The second half is projected on arrival; its mean is accumulated.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pca = SnapshotPCA(n_first=50, n_components=2)
    >>> for x in rng.normal(size=(100, 5)) * [5.0, 2.0, 1.0, 0.1, 0.1]:
    ...     pca.add(x)
    >>> pca.components.shape, np.abs(pca.components[0]).argmax(), pca.projections.shape
    ((2, 5), np.int64(0), (50, 2))
    """

    def __init__(self, *, n_first: int, n_components: int, streaming: bool = False, batch: int = 64):
        if n_components >= n_first:
            raise ConfigError(f"`n_components` must be < the snapshots of the first half ({n_first}); "
                              f"got {n_components}")
        self.n_first, self.k, self.streaming, self.batch = n_first, n_components, streaming, batch
        self._first: list[np.ndarray] = []
        self._ipca = None
        self.components: np.ndarray | None = None
        self.variance_fit: np.ndarray | None = None
        self._mean_fit: np.ndarray | None = None
        self._proj: list[np.ndarray] = []
        self._sum: np.ndarray | None = None
        self.n_seen = 0

    def _partial_fit(self, X: np.ndarray) -> None:
        if self._ipca is None:
            from sklearn.decomposition import IncrementalPCA
            self._ipca = IncrementalPCA(n_components=self.k)
        self._ipca.partial_fit(X)

    def _finish_fit(self) -> None:
        if self.streaming:
            self._partial_fit(np.asarray(self._first))   # >= batch rows left (or all n_first > k)
            self._first = []
            V, var, mean = self._ipca.components_, self._ipca.explained_variance_, self._ipca.mean_
        else:
            X = np.asarray(self._first)
            mean = X.mean(0)
            _, s, Vt = np.linalg.svd(X - mean, full_matrices=False)
            V, var = Vt[:self.k], s[:self.k] ** 2 / (len(X) - 1)
            self._first = []
        # a deterministic sign: the largest-magnitude entry of each PC is positive
        idx = np.abs(V).argmax(1)
        V = V * np.sign(V[np.arange(len(V)), idx])[:, None]
        self.components, self.variance_fit, self._mean_fit = np.asarray(V), np.asarray(var), mean

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        if self.n_seen < self.n_first:
            self._first.append(x)
            self.n_seen += 1
            b = max(self.batch, self.k)
            if self.streaming and len(self._first) >= 2 * b and self.n_seen < self.n_first:
                self._partial_fit(np.asarray(self._first[:b]))
                del self._first[:b]
            if self.n_seen == self.n_first:
                self._finish_fit()
            return
        self._proj.append(self.components @ (x - self._mean_fit))
        self._sum = x.copy() if self._sum is None else self._sum + x
        self.n_seen += 1

    @property
    def projections(self) -> np.ndarray:
        """Second-half projections on the PCs, ``(T2, k)`` (centred on the first half's mean)."""
        return np.asarray(self._proj)

    @property
    def mean_second(self) -> np.ndarray:
        """Mean snapshot of the second half: the centre of the widths and profiles."""
        return self._sum / len(self._proj)


@dataclass(frozen=True)
class TrajectoryResult:
    """The per-PC table, the second-half projections and the loss profiles of one window;
    ``window`` describes how it started and whether its loss was level (run.json's
    ``trajectory`` record: :func:`collect_trajectory`)."""

    pcs: pd.DataFrame
    projections: pd.DataFrame
    profiles: pd.DataFrame
    window: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.pcs.copy()

    def tables(self) -> dict[str, pd.DataFrame]:
        """The optional log tables by file name (schema.TRAJECTORY, ...)."""
        return {TRAJECTORY_FILE: self.pcs, PROJECTIONS_FILE: self.projections, PROFILES_FILE: self.profiles}


def analyse_trajectory(pca: SnapshotPCA, loss_fn: Callable[[np.ndarray], float], *,
                       steps: Sequence[int] | None = None, profile_points: int = 21,
                       params: str = "all") -> TrajectoryResult:
    """σ_i², ``variance_short``, widths (f = e, 2) and loss profiles along each PC of ``pca``.

    Parameters
    ----------
    pca : SnapshotPCA
        Fed with every snapshot of the window.
    loss_fn : callable
        Full-batch training loss (dropout off) at a parameter-subset vector.
    steps : sequence of int, optional
        Training steps of the second-half snapshots (default 0, 1, ...).
    profile_points : int
        Grid points of each profile, on [−1.5 h, 1.5 h], h the larger f = e half-width
        (3 σ_i when censored).
    params : str
        Label of the parameter subset (the tables' ``params`` column).

    Examples
    --------
    Isotropic Langevin dynamics on a quadratic: σ² ∝ 1/λ and F ∝ λ^(-1/2).

    >>> rng = np.random.default_rng(1)
    >>> lam = np.array([8.0, 4.0, 2.0, 1.0]); eta, T = 0.01, 0.01
    >>> pca = SnapshotPCA(n_first=2000, n_components=3)
    >>> th = np.zeros(4)
    >>> for _ in range(4000):
    ...     th = th - eta * lam * th + np.sqrt(2 * eta * T) * rng.normal(size=4)
    ...     pca.add(th)
    >>> res = analyse_trajectory(pca, lambda v: 1.0 + 0.5 * float(v @ (lam * v)))
    >>> bool(res.pcs["drift"].iloc[0]), len(res.profiles) == 3 * 21
    (True, True)
    """
    P = pca.projections
    T2, k = P.shape
    if T2 < 4:
        raise ConfigError(f"the second half has {T2} snapshots; need >= 4")
    center = pca.mean_second
    var = P.var(0, ddof=1)
    short = P[: T2 // 2]
    var_short = short.var(0, ddof=1)
    L0 = float(loss_fn(center))
    rows, prof = [], []
    scale = max(float(np.linalg.norm(center)), 1e-12)
    for i in range(k):
        v = pca.components[i]
        sd = float(np.sqrt(var[i])) if var[i] > 0 else 1e-8 * scale
        t0, t_max = 0.1 * sd, max(10 * scale, 1e4 * sd)
        widths, halves = {}, {}
        for col, f in THRESHOLDS.items():
            tm, tp = landscape_width(loss_fn, center, v, factor=f, loss0=L0, t0=t0, t_max=t_max)
            widths[col] = tm + tp if math.isfinite(tm) and math.isfinite(tp) else None
            halves[col] = (tm, tp)
        tm, tp = halves["width"]
        h = np.nanmax([tm, tp]) if np.isfinite([tm, tp]).any() else 3 * sd
        for t in np.linspace(-1.5 * h, 1.5 * h, profile_points):
            prof.append({"kind": "pc", "direction": i, "t": float(t), "loss": float(loss_fn(center + t * v)),
                         "loss0": L0})
        rows.append({"component": i, "variance": float(var[i]), "variance_short": float(var_short[i]),
                     "variance_ratio": float(var[i] / var_short[i]) if var_short[i] > 0 else None,
                     "variance_fit": float(pca.variance_fit[i]), "width": widths["width"],
                     "width_2": widths["width_2"], "t_minus": None if not math.isfinite(tm) else tm,
                     "t_plus": None if not math.isfinite(tp) else tp, "loss0": L0,
                     "drift": i == 0, "n_snapshots": int(T2), "params": params})
    pcs = pd.DataFrame(rows)
    for c in ("width", "width_2", "t_minus", "t_plus", "variance_ratio"):
        pcs[c] = pcs[c].astype(np.float64)
    pcs["component"] = pcs["component"].astype(np.int64)
    pcs["n_snapshots"] = pcs["n_snapshots"].astype(np.int64)
    st = np.arange(T2) if steps is None else np.asarray(steps, dtype=np.int64)
    projections = pd.DataFrame({"step": np.repeat(st, k).astype(np.int64),
                                "component": np.tile(np.arange(k), T2).astype(np.int64),
                                "value": P.ravel()})
    profiles = pd.DataFrame(prof)
    profiles["direction"] = profiles["direction"].astype(np.int64)
    return TrajectoryResult(pcs, projections, profiles)


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
