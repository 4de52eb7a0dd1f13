"""A tiny collection config (digits, one hidden layer of 4 units) shared by the collect tests."""

from __future__ import annotations

_TEMPLATE = """
[data]
name = "digits"
n_train = 60
n_test = 20

[model]
widths = [4]

[train]
method = {methods}
seed = {seeds}
steps = {steps}
batch_size = 8
lr = {lr}
log_every = {log_every}

[probe]
every = {every}
top_k = 3
n_samples = 12
n_random = 2
hutchinson_probes = 4
tr_hc_samples = 4
{probe_extra}"""


def tiny_toml(*, methods: str, seeds: str = "[0]", steps: int, lr=0.1, log_every: int, every: int = 0,
              probe_extra: str = "") -> str:
    """The TOML text; ``methods``/``seeds`` are TOML values (e.g. ``'["gd", "sgd"]'``),
    ``probe_extra`` further ``[probe]`` lines."""
    return _TEMPLATE.format(methods=methods, seeds=seeds, steps=steps, lr=lr, log_every=log_every, every=every,
                            probe_extra=probe_extra + "\n" if probe_extra else "")
