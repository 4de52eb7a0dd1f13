"""Parameter blocks (layers) of a probed model: which coordinates of theta a per-layer probe uses.

A *block* is a named subset of the trainable parameters, i.e. a set of coordinates of the flat
parameter vector :math:`\\theta \\in \\mathbb{R}^D` (in ``named_parameters()`` order). The probe
setting ``blocks`` names them:

* ``"layers"`` -- one block per module that owns parameters directly (weight and bias of a
  layer together), named by the module's name (a parameter of the root module is its own block);
* a list of names -- each a ``named_parameters()`` name (that parameter alone, e.g.
  ``"0.weight"``) or a module name (all of that module's parameters, e.g. ``"0"`` = weight and
  bias of the first layer of an ``nn.Sequential``).

Per block ``b`` the probe computes the top eigenpairs of the block-diagonal Hessian
:math:`H_{bb}` (see :class:`~varprinciple.collect.curvature.BlockHessianOperator`) and projects
the noise on them embedded in :math:`\\mathbb{R}^D` (zero outside the block); ``docs/probes.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["LAYERS", "ParameterBlock", "block_names", "resolve_blocks", "embed", "block_random_directions"]

#: The ``blocks`` value asking for one block per module with parameters.
LAYERS = "layers"


@dataclass(frozen=True)
class ParameterBlock:
    """One block: its name, the parameters it holds and their flat coordinates in theta."""

    name: str
    params: tuple[str, ...]
    index: np.ndarray

    @property
    def size(self) -> int:
        return int(self.index.shape[0])


def _owners(param_names: list[str]) -> dict[str, list[str]]:
    """Module name -> the parameters it holds (recursively), for every module owning any."""
    out: dict[str, list[str]] = {}
    for p in param_names:
        parts = p.split(".")
        for i in range(1, len(parts)):
            out.setdefault(".".join(parts[:i]), []).append(p)
    return out


def block_names(param_names: list[str]) -> list[str]:
    """Every name ``blocks`` accepts for a model with these parameters: module names, then
    parameter names.

    Examples
    --------
    >>> block_names(["0.weight", "0.bias", "2.weight"])
    ['0', '2', '0.weight', '0.bias', '2.weight']
    """
    return list(_owners(param_names)) + list(param_names)


def resolve_blocks(blocks, param_names: list[str], numels: list[int]) -> list[ParameterBlock]:
    """The blocks named by ``blocks`` (``"layers"`` or a sequence of names) for parameters
    ``param_names`` with ``numels`` elements each (the flat order of theta).

    Raises
    ------
    ConfigError
        Naming an unknown block and listing the allowed names.

    Examples
    --------
    >>> bs = resolve_blocks("layers", ["0.weight", "0.bias", "2.weight"], [6, 2, 4])
    >>> [(b.name, b.size) for b in bs]
    [('0', 8), ('2', 4)]
    >>> resolve_blocks(["2.weight"], ["0.weight", "0.bias", "2.weight"], [6, 2, 4])[0].index
    array([ 8,  9, 10, 11])
    >>> resolve_blocks(["fc9"], ["0.weight", "0.bias"], [6, 2])
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: `blocks`: unknown block 'fc9'; allowed: '0', '0.weight', '0.bias' (or "layers").
    """
    offs = np.concatenate([[0], np.cumsum(numels)]).astype(np.int64)
    where = {p: np.arange(offs[i], offs[i + 1], dtype=np.int64) for i, p in enumerate(param_names)}
    owners = _owners(param_names)
    if isinstance(blocks, str):
        if blocks != LAYERS:
            raise ConfigError(f"`blocks` must be \"layers\" or a list of parameter/module names; got {blocks!r}.")
        groups: dict[str, list[str]] = {}
        for p in param_names:
            mod = p.rsplit(".", 1)[0] if "." in p else p  # a root parameter is its own block
            groups.setdefault(mod, []).append(p)
        named = list(groups.items())
    else:
        named = []
        for b in blocks:
            if b in where:
                named.append((b, [b]))
            elif b in owners:
                named.append((b, owners[b]))
            else:
                allowed = ", ".join(repr(n) for n in block_names(param_names))
                raise ConfigError(f"`blocks`: unknown block {b!r}; allowed: {allowed} (or \"layers\").")
    return [ParameterBlock(name, tuple(ps), np.concatenate([where[p] for p in ps])) for name, ps in named]


def embed(Vb: torch.Tensor, index: np.ndarray, D: int) -> torch.Tensor:
    """Columns ``Vb`` (``(D_b, c)``) embedded in R^D: zero outside the block's coordinates.

    Examples
    --------
    >>> embed(torch.ones(2, 1), np.array([1, 3]), 4).T
    tensor([[0., 1., 0., 1.]])
    """
    out = Vb.new_zeros((D, Vb.shape[1]))
    out[torch.as_tensor(index, device=Vb.device)] = Vb
    return out


def block_random_directions(index: np.ndarray, D: int, m: int, *, generator: torch.Generator,
                            dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``m`` uniformly random unit directions supported on the block, embedded in R^D ``(D, m)``.

    Examples
    --------
    >>> R = block_random_directions(np.array([0, 2]), 4, 3, generator=torch.Generator().manual_seed(0))
    >>> R.shape, bool(R[[1, 3]].abs().max() == 0), torch.allclose(R.norm(dim=0), torch.ones(3, dtype=R.dtype))
    (torch.Size([4, 3]), True, True)
    """
    R = torch.randn(len(index), m, generator=generator, dtype=torch.float64)
    return embed((R / R.norm(dim=0, keepdim=True)).to(dtype), index, D)
