"""Training-framework callbacks built on :class:`~varprinciple.collect.recorder.Recorder`.

``LightningRecorder(recorder)`` is a Lightning ``Callback``: after every training batch it calls
``recorder.step(trainer.global_step)`` (optimiser steps done), and at the end of training it
probes the last step too. Lightning is imported only when ``LightningRecorder`` is first used
(``pip install lightning``, or the ``lightning`` extra), so importing this module needs no
framework.
"""

from __future__ import annotations

import functools

from ..errors import ConfigError

__all__ = ["LightningRecorder"]


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


def __getattr__(name: str):
    if name == "LightningRecorder":
        return _lightning_recorder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
