"""1-D loss profiles for pictures: filter-normalised random directions and run-to-run lines.

* :func:`filter_normalized_direction` (Li et al., 2018): a Gaussian direction rescaled per
  filter — each output row of a weight matrix (each output channel of a conv kernel) gets
  the norm of the same filter of the weights; 1-D parameters (biases) get zero.
* :func:`random_profiles` — L(θ + t d) for ``n_directions`` such directions, t on a grid in
  [−radius, radius]; :func:`interpolation_profile` — L((1 − t) θ_a + t θ_b) for t in
  [−0.25, 1.25] between two collected runs (:func:`add_interpolation_profile` appends it to
  run a's ``loss_profiles.parquet``).

Losses are full-batch training losses with dropout off (docs/flatness.md). Rows follow the
optional table ``loss_profiles.parquet`` (:data:`varprinciple.schema.LOSS_PROFILES`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ..errors import InputError

__all__ = ["filter_normalized_direction", "profile_along", "random_profiles", "interpolation_profile",
           "add_interpolation_profile"]


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction with the per-filter norms of ``model``'s parameters (biases: 0).

    Examples
    --------
    >>> m = nn.Linear(3, 2)
    >>> d = filter_normalized_direction(m, torch.Generator().manual_seed(0))
    >>> torch.allclose(d[0].norm(dim=1), m.weight.detach().norm(dim=1)), bool((d[1] == 0).all())
    (True, True)
    """
    out = []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:
            out.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device)
        dims = tuple(range(1, w.dim()))
        scale = (torch.linalg.vector_norm(w, dim=dims, keepdim=True)
                 / torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-30))
        out.append(d * scale)
    return out


@torch.no_grad()
def profile_along(model: nn.Module, loss, X: torch.Tensor, y: torch.Tensor, direction: Sequence[torch.Tensor],
                  ts: Sequence[float], *, base: Sequence[torch.Tensor] | None = None) -> np.ndarray:
    """Full-batch training losses (dropout off) at ``base + t · direction`` for each t.

    ``base`` defaults to the model's current parameters, which are restored afterwards.
    """
    from .train import evaluate
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    base = saved if base is None else list(base)
    out = []
    try:
        for t in ts:
            for p, b, d in zip(params, base, direction):
                p.copy_(b + float(t) * d)
            out.append(evaluate(model, loss, X, y, None)[0])
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)
    return np.asarray(out, dtype=float)


def random_profiles(model: nn.Module, loss, X, y, *, n_directions: int, points: int = 21, radius: float = 1.0,
                    generator: torch.Generator) -> pd.DataFrame:
    """Loss profiles along ``n_directions`` filter-normalised random directions (``kind`` random).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g); y = X @ torch.ones(3, 1)
    >>> df = random_profiles(nn.Linear(3, 1), "mse", X, y, n_directions=2, points=5, generator=g)
    >>> len(df), sorted(df["kind"].unique()), bool(df.loc[df["t"] == 0, "loss"].iloc[0] == df["loss0"].iloc[0])
    (10, ['random'], True)
    """
    if n_directions < 1 or points < 3 or not radius > 0:
        raise InputError(f"`n_directions` >= 1, `points` >= 3 and `radius` > 0 are needed; got "
                         f"{n_directions}, {points}, {radius}")
    from .train import evaluate
    ts = np.linspace(-radius, radius, points)
    L0 = evaluate(model, loss, X, y, None)[0]
    rows = []
    for j in range(n_directions):
        d = filter_normalized_direction(model, generator)
        losses = profile_along(model, loss, X, y, d, ts)
        rows += [{"kind": "random", "direction": j, "t": float(t), "loss": float(v), "loss0": L0}
                 for t, v in zip(ts, losses)]
    df = pd.DataFrame(rows)
    df["direction"] = df["direction"].astype(np.int64)
    return df


def interpolation_profile(model: nn.Module, loss, X, y, state_a: dict, state_b: dict, *, points: int = 31,
                          t_range: tuple[float, float] = (-0.25, 1.25), other_run: str = "b") -> pd.DataFrame:
    """L((1 − t) θ_a + t θ_b) on ``points`` values of t (``kind`` interpolation, t = 0: θ_a)."""
    names = [n for n, _ in model.named_parameters()]
    miss = [n for n in names if n not in state_a or n not in state_b]
    if miss:
        raise InputError(f"parameter {miss[0]!r} is missing from a state_dict; the runs do not share a model")
    pa = [state_a[n].to(p.dtype) for n, p in model.named_parameters()]
    pb = [state_b[n].to(p.dtype) for n, p in model.named_parameters()]
    if any(a.shape != b.shape for a, b in zip(pa, pb)):
        raise InputError("the two runs' parameters have different shapes; they do not share a model")
    ts = np.linspace(t_range[0], t_range[1], points)
    losses = profile_along(model, loss, X, y, [b - a for a, b in zip(pa, pb)], ts, base=pa)
    L0 = float(losses[np.argmin(np.abs(ts))]) if (ts == 0).any() else float("nan")
    df = pd.DataFrame({"kind": "interpolation", "direction": np.int64(0), "t": ts, "loss": losses, "loss0": L0,
                       "other_run": other_run})
    df["direction"] = df["direction"].astype(np.int64)
    return df


def _rebuild(run_dir: Path):
    from .assembly import build_run
    from .sweep import RunSpec
    spec, meta = RunSpec.from_run_dir(run_dir)
    cfg = spec.config
    src = meta.get("config_source")
    base_dir = str(Path(src).resolve().parent) if src else "."
    _ds, loss, model, _g, ((X, y, _l), _t), _ = build_run(spec, base_dir, "cpu")
    return meta, cfg, loss, model, X, y


def add_interpolation_profile(run_a: str | os.PathLike, run_b: str | os.PathLike, *, points: int = 31,
                              t_range: tuple[float, float] = (-0.25, 1.25)) -> pd.DataFrame:
    """Profile the straight line from run a's final weights to run b's; append it to run a's
    ``loss_profiles.parquet`` (replacing an earlier profile towards the same run).

    Both runs must be collected with the same ``[data]`` and ``[model]`` configuration; the
    loss is run a's training loss.

    Raises
    ------
    InputError
        If a run has no run.json/collect config or model.pt, or the runs' data or model differ.
    """
    from .api import load_checkpoint
    from ..io import refresh_file_records, write_table
    ra, rb = Path(run_a), Path(run_b)
    meta_a, cfg_a, loss, model, X, y = _rebuild(ra)
    meta_b = json.loads((rb / schema.RUN_JSON).read_text()) if (rb / schema.RUN_JSON).exists() else None
    if meta_b is None or not isinstance(meta_b.get("config"), dict):
        raise InputError(f"{rb}: cannot read run.json with a collect 'config'")
    for sec in ("data", "model"):
        if meta_b["config"].get(sec) != cfg_a.get(sec):
            raise InputError(f"{rb}: [{sec}] differs from {ra}'s; a straight line needs the same data and model")
    states = []
    for r in (ra, rb):
        if not (r / "model.pt").exists():
            raise InputError(f"{r}: model.pt missing")
        states.append({k: v.detach().clone() for k, v in load_checkpoint(model, r / "model.pt").state_dict().items()})
    df = interpolation_profile(model, loss, X, y, states[0], states[1], points=points, t_range=t_range,
                               other_run=str(meta_b["run_id"]))
    path = ra / schema.LOSS_PROFILES.file
    if path.exists():
        old = pd.read_parquet(path)
        if "other_run" in old:
            old = old[~((old["kind"] == "interpolation") & (old["other_run"] == meta_b["run_id"]))]
        df = pd.concat([old, df], ignore_index=True)
    write_table(path, df)
    refresh_file_records(ra, [path.name])  # run.json records the table's new size and hash
    return df
