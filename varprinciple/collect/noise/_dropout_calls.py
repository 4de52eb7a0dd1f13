"""Private: the dropout calls a model makes, intercepted at the torch-function level.

Every dropout a model applies in train mode goes through one of a few calls: ``F.dropout``
(``nn.Dropout`` modules call it too, as do Hugging Face's eager attention and hand-written
models), ``torch.dropout``, ``F.scaled_dot_product_attention(dropout_p > 0)`` (Hugging Face's
sdpa attention, hand-written GPTs) and ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer``), which itself calls ``dropout`` or ``scaled_dot_product_attention``.
:class:`DropoutInterceptor` (a :class:`~torch.overrides.TorchFunctionMode`) routes each such
call to a callback that may return the tensor with the probe's own mask applied; attention
with dropout is then computed by :func:`sdpa_math`, the math kernel's formula with the mask
applied to the attention weights after the softmax (as the kernel does in train mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["DropoutInterceptor", "sdpa_math", "CHANNEL_DROPOUT"]

_F_DROPOUT = F.dropout
_T_DROPOUT = torch.dropout
_SDPA = F.scaled_dot_product_attention
_MHA = F.multi_head_attention_forward
#: dropout calls whose masks are shared across positions (channels) or that are not scaled
#: Bernoulli masks: the probe cannot draw them, so they are refused by name.
CHANNEL_DROPOUT = {F.dropout1d: "F.dropout1d", F.dropout2d: "F.dropout2d", F.dropout3d: "F.dropout3d",
                   F.alpha_dropout: "F.alpha_dropout", F.feature_alpha_dropout: "F.feature_alpha_dropout"}
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}

#: on_drop(call, p, training, tensor, in_attention) -> masked tensor, or None to run the call as is
OnDrop = Callable[[str, float, bool, torch.Tensor, bool], "torch.Tensor | None"]


def _bind(names, defaults, args, kwargs) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, *,
              on_weights: Callable[[torch.Tensor], torch.Tensor]):
    """``scaled_dot_product_attention`` by its math formula, with ``on_weights`` applied to the
    attention weights after the softmax (where the kernel applies dropout).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> torch.allclose(sdpa_math(q, k, v, is_causal=True, on_weights=lambda a: a), ref)
    True
    """
    L, S = query.size(-2), key.size(-2)
    sc = 1.0 / math.sqrt(query.size(-1)) if scale is None else float(scale)
    if enable_gqa and query.dim() >= 3:
        rep = query.size(-3) // key.size(-3)
        key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
    w = (query @ key.transpose(-2, -1)) * sc
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        w = w.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        w = w.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else w + attn_mask
    w = torch.softmax(w, dim=-1)
    return on_weights(w) @ value


class DropoutInterceptor(TorchFunctionMode):
    """Route the dropout calls made under this mode to ``on_drop``.

    ``on_drop(call, p, training, x, in_attention)`` gets the call's name (``"F.dropout"``,
    ``"torch.dropout"`` or ``"scaled_dot_product_attention"``), its drop probability, its
    ``training`` flag, the tensor dropout acts on (the attention weights for attention) and
    whether the call is attention dropout; it returns the tensor to use instead (e.g. masked),
    or None to run the call unchanged. Channel dropout calls (:data:`CHANNEL_DROPOUT`) with
    ``p > 0`` in training go to ``on_channel(call)`` (which may raise) and then run unchanged.
    Inside ``nn.MultiheadAttention``'s functional forward the module-level ``F.dropout`` and
    ``F.scaled_dot_product_attention`` are swapped for routed versions for the duration of the
    call (a process-wide swap, like ``sdpa_kernel``: run concurrent probes in processes).
    """

    def __init__(self, on_drop: OnDrop, on_channel: Callable[[str], None] | None = None):
        super().__init__()
        self.on_drop = on_drop
        self.on_channel = on_channel
        self._in_mha = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.route(func, args, kwargs or {})

    def route(self, func, args, kwargs):
        if func is _F_DROPOUT or func is _T_DROPOUT:
            name = "F.dropout" if func is _F_DROPOUT else "torch.dropout"
            a = _bind(("input", "p", "training" if func is _F_DROPOUT else "train", "inplace"),
                      {"p": 0.5, "training": True, "train": True, "inplace": False}, args, kwargs)
            training = bool(a["training"] if func is _F_DROPOUT else a["train"])
            out = self.on_drop(name, float(a["p"]), training, a["input"], self._in_mha > 0)
            return func(*args, **kwargs) if out is None else out
        if func is _SDPA:
            a = _bind(_SDPA_ARGS, _SDPA_DEFAULTS, args, kwargs)
            p = float(a["dropout_p"])
            if p > 0:
                box: dict = {}

                def weights(w):
                    box["out"] = self.on_drop("scaled_dot_product_attention", p, True, w, True)
                    return w if box["out"] is None else box["out"]

                res = sdpa_math(**a, on_weights=weights)
                if box.get("out") is not None:
                    return res
            return func(*args, **kwargs)
        if func is _MHA:
            return self._mha(func, args, kwargs)
        if func in CHANNEL_DROPOUT:
            a = _bind(("input", "p", "training", "inplace"), {"p": 0.5, "training": True, "inplace": False},
                      args, kwargs)
            if a["training"] and float(a["p"]) > 0 and self.on_channel is not None:
                self.on_channel(CHANNEL_DROPOUT[func])
        return func(*args, **kwargs)

    def _mha(self, func, args, kwargs):
        mod = F

        def drop(*a, **k):
            return self.route(_F_DROPOUT, a, k)

        def sdpa(*a, **k):
            return self.route(_SDPA, a, k)

        old = mod.dropout, mod.scaled_dot_product_attention
        mod.dropout, mod.scaled_dot_product_attention = drop, sdpa
        self._in_mha += 1
        try:
            return func(*args, **kwargs)
        finally:
            self._in_mha -= 1
            mod.dropout, mod.scaled_dot_product_attention = old
