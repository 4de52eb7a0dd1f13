"""Collection: train networks, probe Hessian eigenpairs and training noise, write log sets.

The only package of varprinciple that imports torch. Entry points:

- :func:`load_config` / :func:`collect` (``varprinciple collect CONFIG --out LOGDIR``):
  a TOML config expanded into a sweep of runs, each written as one schema-v1 run;
- :func:`probe_model` / :func:`probe_checkpoints`: probe your own ``nn.Module`` and write a run;
  :func:`reprobe_run` re-probes a collected run's checkpoints; :func:`load_checkpoint` loads a
  weights-only state_dict; :class:`NpyRows` gives them inputs read from a ``.npy`` file by chunk;
- :class:`Recorder`: probe from inside a training loop (Lightning: :mod:`.callbacks`);
- the building blocks in :mod:`.data`, :mod:`.models`, :mod:`.train`, :mod:`.probe`.

Submodules are imported lazily so that ``import varprinciple.collect.config`` stays light.
"""

from __future__ import annotations

import importlib

__all__ = ["load_config", "validate_config", "expand_sweep", "collect", "probe_model",
           "probe_checkpoints", "reprobe_run", "load_checkpoint", "default_study_path", "run_study", "NpyRows",
           "Recorder"]

_WHERE = {"load_config": "config", "validate_config": "config", "default_study_path": "config",
          "expand_sweep": "run", "collect": "run", "probe_model": "api", "probe_checkpoints": "api",
          "reprobe_run": "api", "load_checkpoint": "api",
          "run_study": "study", "NpyRows": "rows", "Recorder": "recorder"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
