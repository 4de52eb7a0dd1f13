"""Training-framework callbacks built on :class:`~varprinciple.collect.recorder.Recorder`.

* ``LightningRecorder(recorder)`` is a Lightning ``Callback``: after every training batch it calls
  ``recorder.step(trainer.global_step)`` (optimiser steps done), and at the end of training it
  probes the last step too;
* ``HFRecorder(recorder)`` is a Hugging Face ``TrainerCallback`` doing the same from
  ``on_step_end`` (``state.global_step``) and ``on_train_end``.

Each framework is imported only when its callback is first used (``pip install lightning`` /
``transformers``, or the ``lightning`` / ``hf`` extras), so importing this module needs neither.
"""

from __future__ import annotations

import functools

from ..errors import ConfigError

__all__ = ["LightningRecorder", "HFRecorder"]


@functools.cache
def _lightning_recorder():
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise ConfigError("LightningRecorder needs Lightning: pip install lightning (or the `lightning` "
                              "extra).") from None

    class LightningRecorder(Callback):
        """Probe with ``recorder`` every ``recorder.every`` optimiser steps of a Lightning fit."""

        def __init__(self, recorder):
            super().__init__()
            self.recorder = recorder

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.recorder.step(int(trainer.global_step))

        def on_train_end(self, trainer, pl_module):
            self.recorder.step(int(trainer.global_step), force=True)

    return LightningRecorder


@functools.cache
def _hf_recorder():
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ConfigError("HFRecorder needs transformers: pip install transformers (or the `hf` extra).") from None

    class HFRecorder(TrainerCallback):
        """Probe with ``recorder`` every ``recorder.every`` optimiser steps of a Hugging Face
        ``Trainer`` (pass the model the Trainer trains to the recorder)."""

        def __init__(self, recorder):
            self.recorder = recorder

        def on_step_end(self, args, state, control, **kwargs):
            self.recorder.step(int(state.global_step))

        def on_train_end(self, args, state, control, **kwargs):
            self.recorder.step(int(state.global_step), force=True)

    return HFRecorder


def __getattr__(name: str):
    if name == "LightningRecorder":
        return _lightning_recorder()
    if name == "HFRecorder":
        return _hf_recorder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
