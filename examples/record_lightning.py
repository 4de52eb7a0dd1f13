"""Record probes from a PyTorch Lightning fit with varprinciple's LightningRecorder callback.

    python examples/record_lightning.py LOGDIR      # then: varprinciple test LOGDIR

Needs `pip install lightning` (the `lightning` extra). Run by tests/test_recorder.py.
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from varprinciple.collect.callbacks import LightningRecorder
from varprinciple.collect.probe import ProbeSettings
from varprinciple.collect.recorder import Recorder


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 10))

    def training_step(self, batch, batch_idx):
        x, t = batch
        return nn.functional.cross_entropy(self.net(x), t)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(logdir, *, seed=0, steps=30, every=10):
    d = load_digits()
    X, y = torch.tensor(d.data[:300] / 16.0, dtype=torch.float32), torch.tensor(d.target[:300])
    L.seed_everything(seed, verbose=False)
    module = Classifier()
    settings = ProbeSettings(top_k=6, n_samples=60, batch_size=16, n_random=3, hutchinson_probes=4,
                             tr_hc_samples=4)
    # the recorder probes the network inside the LightningModule, on the whole training set
    rec = Recorder(module.net, "cross_entropy", X, y, out=f"{logdir}/lightning-seed{seed}", every=every,
                   seed=seed, method="sgd+dropout", settings=settings,
                   meta={"lr": 0.5, "batch_size": 32, "drop_prob": 0.1})
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[LightningRecorder(rec)])
    trainer.fit(module, DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True, num_workers=0))
    return rec


if __name__ == "__main__":
    for s in (0, 1):
        fit(sys.argv[1], seed=s)
