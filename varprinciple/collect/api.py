"""Probe your own model: the route for people with their own training code.

- :func:`probe_model` probes one ``nn.Module`` (optionally loading a saved state_dict first)
  on a dataset ``(X, y)`` and writes a schema-v1 run;
- :func:`probe_checkpoints` probes several saved state_dicts of one model, one probe step
  each, into one run (with the eigsh warm start passed from step to step);
- :func:`load_checkpoint` loads a state_dict file with ``torch.load(..., weights_only=True)``
  (a checkpoint may come from someone else: no pickled code is ever run);
- :func:`reprobe_run` re-probes the checkpoints of a run written by ``varprinciple collect``.

Every probe gets its own ``torch.Generator`` seeded from ``seed`` and the step, so a run is
reproducible; PyTorch's global generator (used by ``nn.Dropout``) is seeded inside
``torch.random.fork_rng`` and restored afterwards.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ..run_json import build_run_json
from ..errors import InputError
from ..io import write_run
from .losses import Loss, parse_loss
from .rows import NpyRows
from .probe_runner import ProbeSeries
from .probe_settings import ProbeSettings, fits_model_iv

__all__ = ["probe_model", "probe_checkpoints", "load_checkpoint", "reprobe_run"]

logger = logging.getLogger(__name__)

_RESERVED = ("schema_version", "run_id", "method")
_LOSS_NOTE = {"mse": "(1/2n) sum_i ||f(x_i) - y_i||^2 (not nn.MSELoss: its H is 2/m times this for m outputs)",
              "cross_entropy": "mean negative log-likelihood of integer labels"}


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state_dict file into ``model`` (in place) with ``weights_only=True``; return it.

    Raises
    ------
    InputError
        If the file cannot be read as a weights-only state_dict or does not fit the model.

    Examples
    --------
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.pt"
    >>> torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    >>> model = load_checkpoint(torch.nn.Linear(2, 1), path)
    >>> torch.equal(model.weight, torch.load(path, weights_only=True)["weight"])
    True
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint file") from None
    except Exception as exc:  # torch raises several types for bad or unsafe files
        raise InputError(f"{path}: not a weights-only state_dict ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: holds a {type(state).__name__}, expected a state_dict (a mapping of "
                         f"tensors)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: does not fit the model ({' '.join(str(exc).split())[:300]})") from None
    return model


def _as_tensor(a: Any, name: str, *, rows: bool = False) -> torch.Tensor | NpyRows:
    if isinstance(a, torch.Tensor) or (rows and isinstance(a, NpyRows)):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    kinds = "a torch.Tensor, numpy array or NpyRows" if rows else "a torch.Tensor or numpy array"
    raise InputError(f"`{name}` must be {kinds}; got {type(a).__name__}")


def check_probe_args(model, X, y, out, run_id, method, meta, settings):
    """Check the arguments of an own-model run (probe_checkpoints, the Recorder); returns ``(X, y, out)``."""
    if not isinstance(model, nn.Module):
        raise InputError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    X, y = _as_tensor(X, "X", rows=True), _as_tensor(y, "y")
    if len(X) != len(y):
        raise InputError(f"`X` has {len(X)} rows but `y` has {len(y)}")
    if not isinstance(run_id, str) or not run_id.strip():
        raise InputError(f"`run_id` must be a non-empty string; got {run_id!r}")
    if not isinstance(method, str) or not method.strip():
        raise InputError(f"`method` must be a non-empty string (e.g. 'sgd'); got {method!r}")
    if meta is not None and not isinstance(meta, Mapping):
        raise InputError(f"`meta` must be a mapping; got {type(meta).__name__}")
    clash = [k for k in _RESERVED if meta and k in meta]
    if clash:
        raise InputError(f"`meta` must not set {clash[0]!r}; pass it as an argument")
    if out is None:
        raise InputError("`out` (the run directory to write) is required")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"`out` {out}: is a file; expected a run directory")
    if settings is not None and not isinstance(settings, ProbeSettings):
        raise InputError(f"`settings` must be a ProbeSettings; got {type(settings).__name__}")
    s = settings if settings is not None else ProbeSettings()
    fits_model_iv(sources=s.sources, batch_size=s.batch_size, top_k=s.top_k, n_train=len(X),
                  n_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                  diag_params=s.diag_params)
    return X, y, out


def write_probe_run(out: Path, model: nn.Module, loss, X, results: list, *, run_id: str, method: str, settings,
                    seed: int, info: list[dict], fingerprints: dict, meta: Mapping[str, Any] | None) -> dict:
    """Write the run of probe results ``results`` (one per step, in step order) at ``out``: the
    tables and run.json (the one builder of an own-model run's run.json); returns run.json's dict."""
    sites = None
    for res in results:
        sites = res.info.get("dropout_sites", sites)
    n_params = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    sd = settings.to_dict()
    run_meta = build_run_json(run_id, method, {
        "seed": int(seed),
        "loss": loss.value, "loss_normalisation": _LOSS_NOTE.get(loss.value, "custom: mean of per-sample losses"),
        "n_params": n_params, "model": type(model).__name__, "n_train": int(len(X)),
        "probe_batch_size": sd.get("batch_size"), "probe_drop_prob": sd.get("drop_prob"),
        "probe_steps": [int(i["step"]) for i in info], "probe_settings": sd, "probes": info,
        "dropout_sites": sites or [], "checkpoint_fingerprint": fingerprints,
    }, meta=meta)
    tables = {}
    for name, frames in ((schema.EXACT_VARIANCE.file, [r.exact_variance for r in results]),
                         (schema.FLATNESS.file, [r.flatness for r in results]),
                         (schema.DIAGONAL.file, [getattr(r, "diagonal", None) for r in results])):
        frames = [f for f in frames if f is not None and len(f)]
        if frames:
            tables[name] = pd.concat(frames, ignore_index=True)
    write_run(out, run_meta, eigen=pd.concat([r.eigen for r in results], ignore_index=True),
              noise=pd.concat([r.noise for r in results], ignore_index=True), tables=tables)
    return run_meta


def probe_checkpoints(model: nn.Module, loss: Loss | str, X, y,
                      checkpoints: Mapping[int, str | os.PathLike | None], *, out: str | os.PathLike,
                      run_id: str, method: str, settings=None, seed: int = 0,
                      meta: Mapping[str, Any] | None = None, overwrite: bool = False,
                      progress: bool = False) -> Path:
    """Probe ``model`` at several saved states (one probe step each) and write one run.

    Parameters
    ----------
    model : nn.Module
        The architecture; each checkpoint is loaded into a copy of it (a ``None`` path
        probes the model's current parameters).
    loss : Loss, str or callable
        ``"mse"`` ((1/2n) sum ||f - y||^2 -- *not* ``nn.MSELoss``, a mean over outputs too
        without the 1/2, whose Hessian is 2/m times this one for m outputs), ``"cross_entropy"``
        (mean NLL of integer labels), or a callable ``loss(output, target)`` returning per-sample
        losses ``(n,)`` (see ``docs/user-models.md``).
    X, y : Tensor or ndarray
        The training data the Hessian and the noise refer to. ``X`` may be an
        :class:`~varprinciple.collect.rows.NpyRows` (a ``.npy`` file read by chunk: memory
        independent of n under the budget).
    checkpoints : mapping step -> path or None
        State_dict files by training step.
    out : path
        The run directory (its parent is a log set).
    run_id, method : str
        run.json's required keys (method: gd, sgd, dropout, sgd+dropout, ...).
    settings : ProbeSettings, optional
        Default ``ProbeSettings()``.
    seed : int, default 0
        Seed of the probes' random streams.
    meta : mapping, optional
        Further run.json keys (e.g. ``dataset``, ``lr``, ``batch_size``, ``drop_prob``, ``group``).
    overwrite : bool, default False
        Replace an existing run at ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        On bad arguments, an existing run at ``out`` (without ``overwrite``), or an
        unreadable checkpoint.
    """
    X, y, out = check_probe_args(model, X, y, out, run_id, method, meta, settings)
    loss = parse_loss(loss)
    if not isinstance(checkpoints, Mapping) or not checkpoints:
        raise InputError("`checkpoints` must be a non-empty mapping of step -> state_dict path")
    for s in checkpoints:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise InputError(f"`checkpoints` keys must be steps (integers >= 0); got {s!r}")
    if (out / schema.RUN_JSON).exists():
        if not overwrite:
            raise InputError(f"`out` {out}: already holds a run (run.json); pass overwrite=True to replace it")
        (out / schema.RUN_JSON).unlink()  # first: the directory stops looking like a run
        for name in (schema.EIGEN_FILE, schema.NOISE_FILE, *schema.OPTIONAL_TABLES):
            if (out / name).exists():
                (out / name).unlink()
    settings = settings if settings is not None else ProbeSettings()
    series = ProbeSeries(loss, X, y, settings=settings, seed=seed, progress=progress)
    work = copy.deepcopy(model)
    for step in sorted(int(s) for s in checkpoints):
        path = checkpoints[step]
        if path is not None:
            load_checkpoint(work, path)
        series.probe(work, step, checkpoint=None if path is None else str(path))
    run_meta = write_probe_run(out, work, loss, X, series.results, run_id=run_id, method=method,
                               settings=settings, seed=seed, info=series.info, fingerprints=series.fingerprints,
                               meta=meta)
    logger.info("probed %s at step(s) %s into %s", run_id, run_meta["probe_steps"], out)
    return out


def probe_model(model: nn.Module, loss: Loss | str, X, y, *, out: str | os.PathLike, run_id: str,
                method: str, settings=None, step: int = 0, seed: int = 0,
                meta: Mapping[str, Any] | None = None, checkpoint: str | os.PathLike | None = None,
                overwrite: bool = False, progress: bool = False) -> Path:
    """Probe one model (its current parameters, or a saved state_dict) and write a run.

    The probe measures the top-k Hessian eigenpairs of the full-batch loss on ``(X, y)``
    (dropout off) and samples each noise source of ``settings``, projected on the
    eigenvectors and on random directions (see ``docs/collection.md``). Parameters are
    those of :func:`probe_checkpoints`; ``step`` labels the probe and ``checkpoint`` is an
    optional state_dict file loaded (``weights_only=True``) into a copy of ``model``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from varprinciple.collect.api import probe_model
    >>> from varprinciple.collect.probe import ProbeSettings
    >>> from varprinciple.io import read_run
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(64, 3, generator=g); y = X @ torch.tensor([[1.0], [2.0], [0.5]])
    >>> model = torch.nn.Linear(3, 1)
    >>> run = probe_model(model, "mse", X, y, out=tempfile.mkdtemp() + "/lin", run_id="lin",
    ...                   method="gd", settings=ProbeSettings(top_k=2, n_samples=50, n_random=1,
    ...                   sources=("sgd",), batch_size=8, hutchinson_probes=4, tr_hc_samples=0))
    >>> read_run(run).run_id
    'lin'
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InputError(f"`step` must be an integer >= 0; got {step!r}")
    return probe_checkpoints(model, loss, X, y, {int(step): checkpoint}, out=out, run_id=run_id,
                             method=method, settings=settings, seed=seed, meta=meta, overwrite=overwrite,
                             progress=progress)


def reprobe_run(run_dir: str | os.PathLike, *, out: str | os.PathLike, settings=None,
                steps: list[int] | None = None, run_id: str | None = None, base_dir: str | None = None,
                overwrite: bool = False, progress: bool = False, threads: int | None = None) -> Path:
    """Re-probe the saved checkpoints of a collected run (e.g. with other probe settings).

    Rebuilds the data and model from the run's ``run.json`` (its resolved ``config``), loads
    ``checkpoints/step_<n>.pt`` (``weights_only=True``) for each of ``steps`` (default: all
    saved) and writes a new run at ``out``. Probes run with ``threads`` torch threads
    (default: the run's recorded ``torch_threads``): floating-point reductions split across
    threads round differently, so with the run's own settings and thread count the re-probe
    reproduces its tables bit for bit on the same machine.

    Raises
    ------
    InputError
        If ``run_dir`` has no run.json with a collect config, or a checkpoint is missing.
    """
    from .assembly import build_run, probe_settings, unprobed_dropout
    from .sweep import RunSpec

    run_dir = Path(run_dir)
    spec, meta = RunSpec.from_run_dir(run_dir, missing_hint="; use probe_checkpoints with your model")
    cfg = spec.config
    if base_dir is None:
        src = meta.get("config_source")
        base_dir = str(Path(src).resolve().parent) if src else "."
    ds, loss, model, _g, ((X, y, _l), _test), drop_names = build_run(spec, base_dir, "cpu")
    avail = {}
    for p in sorted((run_dir / "checkpoints").glob("step_*.pt")):
        avail[int(p.stem.split("_")[1])] = p
    steps = sorted(avail) if steps is None else list(steps)
    missing = [s for s in steps if s not in avail]
    if missing or not steps:
        raise InputError(f"{run_dir}: no checkpoint for step(s) {missing or 'any'} "
                         f"(saved: {sorted(avail) or 'none'})")
    if settings is None:
        p = cfg["probe"]
        settings = probe_settings(p, drop_names if "dropout" in p["sources"] else [])
    keep = {k: meta[k] for k in ("group", "dataset", "arch", "lr", "batch_size", "drop_prob", "keep_prob",
                                 "steps", "data_split", "config") if k in meta}
    keep["reprobed_from"] = str(run_dir)
    if "dropout" in settings.sources and settings.dropout_layers is not None:
        # trained dropout outside the source's layers is switched off, as `collect` does
        off = unprobed_dropout(model, list(settings.dropout_layers))
        for name in off:
            model.get_submodule(name).p = 0.0
        keep["probe_dropout_disabled"] = off
    if threads is None:
        threads = meta.get("torch_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"`threads` must be an integer >= 1; got {threads!r}.")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return probe_checkpoints(model, loss, X, y, {s: avail[s] for s in steps}, out=out,
                                 run_id=run_id or meta["run_id"], method=meta["method"], settings=settings,
                                 seed=meta.get("probe_seed", 0), meta=keep, overwrite=overwrite,
                                 progress=progress)
    finally:
        torch.set_num_threads(old_threads)
