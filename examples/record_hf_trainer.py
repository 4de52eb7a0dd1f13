"""Record probes from a Hugging Face Trainer run with varprinciple's HFRecorder callback.

    python examples/record_hf_trainer.py LOGDIR      # then: varprinciple test LOGDIR

A tiny BERT built from a config (nothing downloaded) classifies synthetic token sequences; the
recorder probes it every 10 optimiser steps with every dropout it applies in train mode
(embeddings, attention, hidden and classifier dropout). Needs `transformers` and `accelerate`
(the Trainer's own requirement). tests/test_recorder.py runs `train_manually` (the Trainer's
callback calls by hand) always, and `fit` when `accelerate` is installed.
"""

from __future__ import annotations

import sys

import torch
import transformers

from varprinciple.collect.callbacks import HFRecorder
from varprinciple.collect.probe import ProbeSettings
from varprinciple.collect.recorder import Recorder

SETTINGS = ProbeSettings(top_k=6, n_samples=60, batch_size=16, n_random=3, hutchinson_probes=4, tr_hc_samples=4)


def tiny_bert(seed=0):
    transformers.logging.set_verbosity_error()
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=50, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(cfg)


def tokens(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, 50, (n, 6), generator=g)
    return X, (X == 7).any(1).long()


class Sequences(torch.utils.data.Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return {"input_ids": self.X[i], "labels": self.y[i]}


def recorder(model, X, y, logdir, seed):
    return Recorder(model, "cross_entropy", X, y, out=f"{logdir}/bert-seed{seed}", every=10, seed=seed,
                    method="adamw+dropout", settings=SETTINGS, meta={"lr": 1e-3, "batch_size": 16})


def fit(logdir, *, seed=0, steps=30):
    """The real Trainer (needs accelerate)."""
    X, y = tokens(seed=seed)
    model = tiny_bert(seed)
    rec = recorder(model, X, y, logdir, seed)
    args = transformers.TrainingArguments(output_dir=f"{logdir}/.trainer", max_steps=steps,
                                          per_device_train_batch_size=16, learning_rate=1e-3, report_to=[],
                                          save_strategy="no", logging_strategy="no", use_cpu=True, seed=seed)
    transformers.Trainer(model=model, args=args, train_dataset=Sequences(X, y), callbacks=[HFRecorder(rec)]).train()
    return rec


def train_manually(logdir, *, seed=0, steps=30):
    """The same callback driven as the Trainer drives it (``on_step_end`` after each optimiser
    step with ``state.global_step``, ``on_train_end`` at the end), from a plain AdamW loop."""
    X, y = tokens(seed=seed)
    model = tiny_bert(seed)
    cb = HFRecorder(recorder(model, X, y, logdir, seed))
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        model.train()
        idx = torch.randperm(len(X), generator=g)[:16]
        opt.zero_grad()
        model(input_ids=X[idx], labels=y[idx]).loss.backward()
        opt.step()
        state.global_step = step
        cb.on_step_end(None, state, control)
    cb.on_train_end(None, state, control)
    return cb.recorder


if __name__ == "__main__":
    fit(sys.argv[1])
