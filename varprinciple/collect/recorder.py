"""Record probes from inside a training loop: :class:`Recorder`.

``rec = Recorder(model, loss, X, y, out=..., every=N, settings=...)``, then ``rec.step(step)``
after each optimiser step: every ``N`` steps the model is probed where it stands (the probe works
on a copy; PyTorch's global random stream, which the training loop's dropout and shuffling use,
is forked and restored) and the run at ``out`` is rewritten with every probe so far -- the same
log set as ``varprinciple collect`` and ``probe_checkpoints`` write (run.json with per-step
``checkpoint_fingerprint``, ``checkpoints/step_<n>.pt``, the tables), so ``varprinciple test``
reads it. Each probe step is also kept under ``out/.recorder/step_<n>/``: a recorder created on
the same ``out`` (a resumed training job) continues the recording, and steps already probed are
skipped. Callbacks for Lightning: :mod:`.callbacks`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ..errors import InputError
from ..io import atomic_write
from .api import check_probe_args, write_probe_run
from .losses import Loss, parse_loss
from .probe_runner import probe_info, probe_step

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_PARTS = ".recorder"
#: ProbeResult attribute -> the log table file it becomes (the part files use the same names)
_TABLES = {"eigen": schema.EIGEN_FILE, "noise": schema.NOISE_FILE, "exact_variance": schema.EXACT_VARIANCE.file,
           "flatness": schema.FLATNESS.file, "diagonal": schema.DIAGONAL.file}


def _save_npy(path: Path, a: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to the temp name
        np.save(fh, a)


class Recorder:
    """Probe a model every ``every`` training steps and keep the run at ``out`` current.

    Parameters
    ----------
    model : nn.Module
        The network being trained (the ``nn.Module`` mapping ``X`` to outputs; with Lightning,
        the network inside the ``LightningModule``). It is never modified.
    loss, X, y
        As for :func:`~varprinciple.collect.api.probe_model`: the training loss and the training
        set the Hessian and the noise refer to.
    out : path
        The run directory (its parent is the log set).
    every : int
        Probe at the steps that are multiples of ``every`` (``step(0)`` included).
    settings : ProbeSettings, optional
        Default ``ProbeSettings()``.
    run_id : str, optional
        Default: the name of ``out``.
    method : str
        run.json's training-method label (gd, sgd, dropout, sgd+dropout, adam, ...).
    seed : int
        Seed of the probes' random streams (each step's from ``derive_seed(seed, step)``).
    meta : mapping, optional
        Further run.json keys (``lr``, ``batch_size``, ``drop_prob``, ``group``, ``dataset``...).
    checkpoints : bool
        Save the probed parameters as ``checkpoints/step_<n>.pt`` (``reprobe`` material).
    overwrite : bool
        Replace a run at ``out`` that is not a recording with these settings.
    progress : bool
        Show the probe's progress.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from varprinciple.collect.probe import ProbeSettings
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(40, 3, generator=g); y = torch.randn(40, 1, generator=g)
    >>> model = nn.Linear(3, 1)
    >>> rec = Recorder(model, "mse", X, y, out=tempfile.mkdtemp() + "/run", every=2, method="gd",
    ...                settings=ProbeSettings(top_k=2, n_samples=20, n_random=1, batch_size=8,
    ...                                       sources=("sgd",), hutchinson_probes=2, tr_hc_samples=0))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for step in range(1, 5):
    ...     opt.zero_grad(); ((model(X) - y) ** 2).mean().backward(); opt.step()
    ...     _ = rec.step(step)
    >>> rec.steps
    [2, 4]
    """

    def __init__(self, model: nn.Module, loss: Loss | str, X, y, *, out: str | os.PathLike, every: int,
                 settings=None, run_id: str | None = None, method: str = "sgd", seed: int = 0,
                 meta: Mapping[str, Any] | None = None, checkpoints: bool = True, overwrite: bool = False,
                 progress: bool = False):
        from .probe import ProbeSettings

        rid = run_id if run_id is not None else (Path(out).name if out is not None else "")
        self.X, self.y, self.out = check_probe_args(model, X, y, out, rid, method, meta, settings)
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise InputError(f"`every` must be an integer >= 1; got {every!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"`seed` must be an integer; got {seed!r}")
        self.model, self.loss = model, parse_loss(loss)
        self.settings = settings if settings is not None else ProbeSettings()
        self.every, self.run_id, self.method, self.seed = int(every), rid, method, int(seed)
        self.meta = dict(meta or {})
        self.checkpoints, self.progress = bool(checkpoints), bool(progress)
        self._parts = self.out / _PARTS
        self._ident = {"run_id": rid, "method": method, "seed": self.seed, "every": self.every,
                       "probe_settings": self.settings.to_dict()}
        self._resume(overwrite)

    # ------------------------------------------------------------------ resume
    def _resume(self, overwrite: bool) -> None:
        ident_file = self._parts / "recorder.json"
        if ident_file.exists() and not overwrite:
            old = json.loads(ident_file.read_text())
            diff = [k for k in self._ident if old.get(k) != json.loads(json.dumps(self._ident[k]))]
            if diff:
                raise InputError(f"`out` {self.out}: holds a recording with another {diff[0]!r}; use another `out` "
                                 f"or overwrite=True")
        elif (self.out / schema.RUN_JSON).exists() and not overwrite:
            raise InputError(f"`out` {self.out}: already holds a run (run.json); pass overwrite=True to replace it")
        elif overwrite and self.out.exists():
            for name in (schema.RUN_JSON, schema.EIGEN_FILE, schema.NOISE_FILE, *schema.OPTIONAL_TABLES):
                if (self.out / name).exists():
                    (self.out / name).unlink()
            shutil.rmtree(self._parts, ignore_errors=True)
        self._parts.mkdir(parents=True, exist_ok=True)
        atomic_write(ident_file, lambda p: p.write_text(json.dumps(self._ident, indent=1)))
        self._done: dict[int, SimpleNamespace] = {}
        for d in sorted(self._parts.glob("step_*")):
            if (d / "probe.json").exists():  # written last: a step is complete only with it
                self._done[int(d.name.split("_")[1])] = self._load(d)
        if self._done:
            logger.info("recorder %s: resuming after step(s) %s", self.run_id, sorted(self._done))

    def _load(self, d: Path) -> SimpleNamespace:
        info = json.loads((d / "probe.json").read_text())
        frames = {t: pd.read_parquet(d / f) if (d / f).exists() else None for t, f in _TABLES.items()}
        return SimpleNamespace(**frames, info=info, top_vector=np.load(d / "top_vector.npy"))

    @property
    def steps(self) -> list[int]:
        """The steps probed so far (this recorder's and a resumed recording's)."""
        return sorted(self._done)

    # ------------------------------------------------------------------ recording
    def step(self, step: int, *, force: bool = False):
        """Probe at ``step`` if it is a multiple of ``every`` (or ``force``) and not probed yet;
        rewrite the run. Returns the :class:`~varprinciple.collect.probe.ProbeResult`, or None."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise InputError(f"`step` must be an integer >= 0; got {step!r}")
        step = int(step)
        if step in self._done or (step % self.every and not force):
            return None
        prev = [s for s in self._done if s < step]
        v0 = self._done[max(prev)].top_vector if prev else None
        res, fp = probe_step(self.model, self.loss, self.X, self.y, step=step, settings=self.settings,
                             seed=self.seed, v0=v0, progress=self.progress)
        ckpt = None
        if self.checkpoints:
            ckpt = f"checkpoints/step_{step}.pt"
            (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            atomic_write(self.out / ckpt, lambda p: torch.save(state, p))
        d = self._parts / f"step_{step}"
        d.mkdir(parents=True, exist_ok=True)
        for t, name in _TABLES.items():
            f = getattr(res, t)
            if f is not None:
                atomic_write(d / name, lambda p, f=f: f.to_parquet(p, index=False))
        atomic_write(d / "top_vector.npy", lambda p: _save_npy(p, res.top_vector))
        info = {**probe_info(step, res, checkpoint=ckpt), "fingerprint": fp,
                "dropout_sites": res.info.get("dropout_sites", [])}
        atomic_write(d / "probe.json", lambda p: p.write_text(json.dumps(info)))
        self._done[step] = SimpleNamespace(eigen=res.eigen, noise=res.noise, exact_variance=res.exact_variance,
                                           flatness=res.flatness, diagonal=res.diagonal, info=info,
                                           top_vector=res.top_vector)
        self._write()
        return res

    def _write(self) -> None:
        parts = [self._done[s] for s in self.steps]
        results = [SimpleNamespace(eigen=p.eigen, noise=p.noise, exact_variance=p.exact_variance,
                                   flatness=p.flatness, diagonal=p.diagonal,
                                   info={"dropout_sites": p.info["dropout_sites"]})
                   for p in parts]
        info = [{k: v for k, v in p.info.items() if k not in ("fingerprint", "dropout_sites")} for p in parts]
        fps = {str(p.info["step"]): p.info["fingerprint"] for p in parts}
        meta = {**self.meta, "recorder": {"every": self.every},
                "checkpoints": [p.info["checkpoint"] for p in parts if p.info["checkpoint"]]}
        write_probe_run(self.out, self.model, self.loss, self.X, results, run_id=self.run_id, method=self.method,
                        settings=self.settings, seed=self.seed, info=info, fingerprints=fps, meta=meta)
