"""Models for collection: linear, MLP and a small CNN, without batch-dependent layers.

Every model is an ``nn.Sequential`` whose modules have stable names, so the probes and a
re-probe from a checkpoint find them:

- MLP: ``flatten``, then for hidden layer i ``fc{i}``, ``act{i}`` and, where dropout is
  requested, ``drop{i}`` (an ``nn.Dropout`` holding the DROP probability), then ``out``;
- CNN: for conv block i ``conv{i}`` (3x3, same padding), ``act{i}``, ``pool{i}`` (2x2 average
  pool), optionally ``drop{i}``; then ``flatten`` and ``out``;
- linear: ``flatten``, ``out``.

Weights are initialised like PyTorch's defaults (uniform on +-1/sqrt(fan_in)) but from an
explicit ``torch.Generator``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .config import Activation, Arch

__all__ = ["build_model", "dropout_module_names", "describe_model", "n_params"]


def _act(name: str) -> nn.Module:
    return {Activation.RELU: nn.ReLU, Activation.TANH: nn.Tanh}[Activation(name)]()


def _init_(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / fan_in ** 0.5
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def build_model(model: Mapping[str, Any], *, input_shape: Sequence[int], n_outputs: int,
                drop_prob: float | None, generator: torch.Generator,
                dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Build the model of a validated ``[model]`` section.

    Parameters
    ----------
    model : mapping
        ``arch``, ``widths``, ``channels``, ``activation``, ``bias``, ``dropout_layers``.
    input_shape : sequence of int
        Shape of one input: ``(d,)`` or ``(height, width)`` (the CNN needs the latter).
    n_outputs : int
        Classes or regression outputs.
    drop_prob : float or None
        DROP probability of the ``nn.Dropout`` layers inserted after ``dropout_layers``
        (all hidden layers if unset); None inserts none.
    generator : torch.Generator
        Initialisation stream.
    dtype : torch.dtype, default float32

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> m = build_model({"arch": "mlp", "widths": [5], "activation": "relu", "bias": True,
    ...                  "dropout_layers": None}, input_shape=(8, 8), n_outputs=3, drop_prob=0.1,
    ...                 generator=g)
    >>> [name for name, _ in m.named_children()]
    ['flatten', 'fc0', 'act0', 'drop0', 'out']
    >>> m(torch.zeros(2, 8, 8)).shape
    torch.Size([2, 3])
    """
    # nn.Linear/nn.Conv2d draw a default initialisation from the global generator; build
    # inside fork_rng so the caller's global state is untouched, then re-initialise below.
    with torch.random.fork_rng(devices=[]):
        net = _build(model, input_shape, n_outputs, drop_prob)
    net.to(dtype)
    _init_(net, generator)
    return net


def _build(model, input_shape, n_outputs, drop_prob) -> nn.Sequential:
    arch = Arch(model["arch"])
    bias = bool(model.get("bias", True))
    act = model.get("activation", "relu")
    d_in = 1
    for s in input_shape:
        d_in *= int(s)
    layers: list[tuple[str, nn.Module]] = []
    if arch is Arch.LINEAR:
        layers += [("flatten", nn.Flatten()), ("out", nn.Linear(d_in, n_outputs, bias=bias))]
    elif arch is Arch.MLP:
        widths = list(model["widths"])
        drop_at = set(range(len(widths)) if model.get("dropout_layers") is None else model["dropout_layers"])
        layers.append(("flatten", nn.Flatten()))
        prev = d_in
        for i, w in enumerate(widths):
            layers += [(f"fc{i}", nn.Linear(prev, w, bias=bias)), (f"act{i}", _act(act))]
            if drop_prob is not None and i in drop_at:
                layers.append((f"drop{i}", nn.Dropout(drop_prob)))
            prev = w
        layers.append(("out", nn.Linear(prev, n_outputs, bias=bias)))
    else:
        if len(input_shape) != 2:
            raise ConfigError(f"[model] arch: 'cnn' needs image inputs (height, width); got input "
                              f"shape {tuple(input_shape)}")
        h, w = (int(s) for s in input_shape)
        channels = list(model["channels"])
        drop_at = set(range(len(channels)) if model.get("dropout_layers") is None else model["dropout_layers"])
        layers.append(("channel", _AddChannel()))
        prev = 1
        for i, c in enumerate(channels):
            if h < 2 or w < 2:
                raise ConfigError(f"[model] channels: {len(channels)} conv blocks halve the {input_shape} "
                                  f"input below 1x1; use fewer blocks")
            layers += [(f"conv{i}", nn.Conv2d(prev, c, 3, padding=1, bias=bias)), (f"act{i}", _act(act)),
                       (f"pool{i}", nn.AvgPool2d(2))]
            if drop_prob is not None and i in drop_at:
                layers.append((f"drop{i}", nn.Dropout(drop_prob)))
            prev, h, w = c, h // 2, w // 2
        layers += [("flatten", nn.Flatten()), ("out", nn.Linear(prev * h * w, n_outputs, bias=bias))]
    return nn.Sequential(OrderedDict(layers))


class _AddChannel(nn.Module):
    """(n, h, w) -> (n, 1, h, w)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def dropout_module_names(model: nn.Module) -> list[str]:
    """Names of the model's ``nn.Dropout`` modules, in order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def describe_model(model: nn.Module) -> str:
    """A one-line description such as ``mlp 64-50-50-10 relu`` for run.json."""
    parts = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            parts.append(f"{name}:{m.in_features}->{m.out_features}")
        elif isinstance(m, nn.Conv2d):
            parts.append(f"{name}:{m.in_channels}->{m.out_channels}")
        elif isinstance(m, nn.Dropout):
            parts.append(f"{name}:p_drop={m.p}")
        elif isinstance(m, (nn.ReLU, nn.Tanh)):
            parts.append(f"{name}:{type(m).__name__.lower()}")
    return " ".join(parts)
