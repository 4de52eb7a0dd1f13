"""The one probe runner: every probe of a network, in ``collect`` and in the own-model API.

- :func:`probe_step` probes a network at one step with the run's seeded streams: the probe's
  ``torch.Generator`` from ``derive_seed(seed, step)``, PyTorch's global generator (used by
  ``nn.Dropout``) seeded inside ``torch.random.fork_rng`` and restored after (so a training
  loop's stream is untouched), the named dropout modules switched off for the probe, and the
  network's fingerprint;
- :func:`probe_info` is a probe's run.json ``probes`` entry;
- :class:`ProbeSeries` probes one network at a series of steps, passing the eigsh warm start
  (the top eigenvector) from step to step, and keeps the results, entries and fingerprints.

Used by :func:`varprinciple.collect.one_run.run_one` (the TOML pipeline),
:func:`varprinciple.collect.api.probe_checkpoints` and the
:class:`~varprinciple.collect.recorder.Recorder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._model import state_fingerprint
from .assembly import dropout_switched_off
from .diagonal import with_diagonal
from .sweep import derive_seed

__all__ = ["probe_step", "probe_info", "ProbeSeries"]


def probe_step(model: nn.Module, loss, X, y, *, step: int, settings, seed: int, v0=None, progress: bool = False,
               switched_off: Sequence[str] = ()):
    """One probe of ``model`` (its current parameters) at ``step`` with the run's seeded streams
    (module docstring); ``switched_off`` names ``nn.Dropout`` modules set to ``p = 0`` for the
    probe. Returns ``(ProbeResult, checkpoint fingerprint)``."""
    from .probe import run_probe  # checked at the caller's boundary (assembly, check_probe_args)

    fingerprint = state_fingerprint(model)
    pseed = derive_seed(int(seed), step)
    gen = torch.Generator().manual_seed(pseed)  # CPU stream: the probes draw on CPU, then move
    # torch.manual_seed also reseeds CUDA: fork (and so restore) the data's device too
    devs = [X.device.index or 0] if isinstance(X, torch.Tensor) and X.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devs), dropout_switched_off(model, list(switched_off)):
        torch.manual_seed(derive_seed(pseed, "global"))
        res = run_probe(model, loss, X, y, settings=settings, step=step, generator=gen, v0=v0, progress=progress)
        # the per-parameter diagonals when asked for, on their own seeded stream (.diagonal)
        res = with_diagonal(res, model, loss, X, y, step=step, settings=settings,
                            generator=torch.Generator().manual_seed(derive_seed(pseed, "diagonal")))
    return res, fingerprint


def probe_info(step: int, res, **extra: Any) -> dict:
    """The run.json ``probes`` entry of probe result ``res`` at ``step``: its HVP count, timings,
    the memory plan and per-layer blocks when it has them, and ``extra`` (e.g. ``checkpoint``)."""
    return {"step": int(step), "n_hvp": int(res.n_hvp), **extra,
            "timings": {k: float(v) for k, v in dict(res.timings).items()},
            **({"plan": res.info["plan"]} if res.info.get("plan") is not None else {}),
            **({"blocks": res.info["blocks"]} if "blocks" in res.info else {})}


class ProbeSeries:
    """Probes of one network at a series of steps, with the eigsh warm start passed on.

    Parameters
    ----------
    loss, X, y, settings, seed, progress, switched_off
        As for :func:`probe_step`.

    Attributes
    ----------
    results : list of ProbeResult
    info : list of dict
        The run.json ``probes`` entries (:func:`probe_info`).
    fingerprints : dict
        Network fingerprint by step (a string).
    """

    def __init__(self, loss, X, y, *, settings, seed: int, progress: bool = False,
                 switched_off: Sequence[str] = ()):
        self.loss, self.X, self.y, self.settings, self.seed = loss, X, y, settings, int(seed)
        self.progress, self.switched_off = progress, list(switched_off)
        self.results: list = []
        self.info: list[dict] = []
        self.fingerprints: dict[str, str] = {}
        self._v0 = None

    def probe(self, model: nn.Module, step: int, **extra: Any):
        """Probe ``model`` at ``step`` (after the earlier steps of the series); ``extra`` goes into
        its ``probes`` entry. Returns the ProbeResult."""
        res, self.fingerprints[str(step)] = probe_step(
            model, self.loss, self.X, self.y, step=step, settings=self.settings, seed=self.seed, v0=self._v0,
            progress=self.progress, switched_off=self.switched_off)
        self._v0 = res.top_vector
        self.results.append(res)
        self.info.append(probe_info(step, res, **extra))
        return res
