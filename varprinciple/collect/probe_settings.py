"""Probe settings: the one owner of the probe's keys, types, defaults, ranges and cross-checks.

- :data:`PROBE_KEYS` declares the ``[probe]`` section of a collect config (type, default,
  range, choices, documentation); :data:`varprinciple.collect.config.CONFIG_KEYS` holds it as
  its ``"probe"`` rows and ``docs/collection.md``'s table is generated from it;
- :class:`ProbeSettings` (what one probe measures) takes its defaults and integer lower bounds
  from it; :func:`tr_hc_in_range`, :func:`isotropic_reference_sampled` and
  :func:`dropout_samples_problem` are the cross-checks
  both boundaries (config load and ``ProbeSettings``) apply;
- :data:`DEFAULT_MEMORY_BUDGET_MB` is the working-memory budget every noise source defaults to.

This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .config_key import ConfigKey

__all__ = ["PROBE_KEYS", "ProbeSettings", "DEFAULT_MEMORY_BUDGET_MB", "API_BATCH_SIZE", "tr_hc_in_range",
           "isotropic_reference_sampled", "dropout_samples_problem", "batch_fits_iv", "fits_model_iv"]

#: The ``[probe]`` section of a collect config.
PROBE_KEYS: dict[str, ConfigKey] = {
    "every": ConfigKey("int", 0, "also probe every N steps (0: only at the end of training)",
                       lo=0),
    "top_k": ConfigKey("int", 20, "Hessian eigenpairs per probe", lo=1),
    "n_samples": ConfigKey("int", 1000, "noise draws K per source per probe", lo=2),
    "sources": ConfigKey("str_list", ["sgd", "dropout", "isotropic"], "noise sources",
                         choices_of="varprinciple.collect.noise:source_names", unique=True),
    "batch_size": ConfigKey("int", None, "SGD-probe batch size B of every run (default: the "
                            "single [train] batch_size; required when that lists several values)",
                            lo=1),
    "n_random": ConfigKey("int", 10, "random unit directions per probe", lo=0),
    "drop_prob": ConfigKey("float", None, "DROP probability of the dropout source (default: "
                           "the run's [train] drop_prob, its first value if a list)", lo=0,
                           hi=1, lo_open=True, hi_open=True),
    "dropout_layers": ConfigKey("int_list", None, "layers of the dropout source (default: "
                                "[model] dropout_layers)", lo=0, unique=True),
    "isotropic_of": ConfigKey("str", "sgd", "source whose centred trace the isotropic control "
                              "matches", choices=("sgd", "dropout")),
    "dtype": ConfigKey("str", "float64", "probe dtype", choices=("float32", "float64")),
    "eig_tol": ConfigKey("float", 1e-10, "eigsh tolerance", lo=0, hi=1, lo_open=True, hi_open=True),
    "exact_variance": ConfigKey("bool", True, "log the exact SGD variance from per-sample "
                                "gradients and dropout's exact moments from two masks per sample"),
    "hutchinson_probes": ConfigKey("int", 64, "Rademacher probes of the deflated Hutchinson "
                                   "estimate of Tr(H)", lo=2),
    "tr_hc_samples": ConfigKey("int", 64, "full noise draws per source for rho = D Tr(HC)/(Tr(H) "
                               "Tr(C)) (0: off; else 3..n_samples)", lo=0),
    "store_vectors_max_params": ConfigKey("int", 50_000, "log eigenvectors up to this many "
                                          "parameters", lo=0),
    "memory_budget_mb": ConfigKey("int", 2048, "working-memory budget of a probe: every buffer that grows "
                                  "with D or n (Krylov basis, directions, HVP graph, per-sample gradients, "
                                  "draws) is planned to fit it, else the probe is refused up front with the "
                                  "budget it needs", lo=1),
    "dropout_samples": ConfigKey("int", None, "sampled dropout draws K (default: n_samples); with "
                                 "exact_variance the exact moments do not need them, so fewer suffice; 0: "
                                 "none (b from the exact variances, docs/probes.md)", lo=0),
    "at_start": ConfigKey("bool", False, "also probe step 0 (the initialisation, before training)"),
    "frozen_batchnorm": ConfigKey("bool", False, "allow BatchNorm layers, probed in eval mode with "
                                  "their running statistics frozen"),
    "blocks": ConfigKey("str_list", None, "per-layer probes: \"layers\" (one block per module with "
                        "parameters, weight and bias together) or a list of named_parameters() or module "
                        "names, e.g. [\"fc1.weight\", \"out\"] (mlp layers are fc0, fc1, ..., out); per "
                        "block the top-k eigenpairs of its Hessian block H_bb and the noise projected on "
                        "them, rows with the block column "
                        "(docs/probes.md; default: off)", unique=True, scalar_choices=("layers",)),
    "diag_params": ConfigKey("int", 0, "parameters sampled per layer (per `blocks` block, else per "
                             "layer) for the exact diagonals h_ii and c_ii of C_ii ~ H_ii^gamma, table "
                             "diagonal.parquet (0: off; docs/probes.md)", lo=0),
}

#: Working-memory budget (MB) of a probe and the default of every noise source.
DEFAULT_MEMORY_BUDGET_MB = PROBE_KEYS["memory_budget_mb"].default
#: SGD-probe batch size of :class:`ProbeSettings` (the API has no ``[train]`` section whose
#: batch size ``[probe] batch_size`` defaults to).
API_BATCH_SIZE = 32


def _default(key: str) -> Any:
    return PROBE_KEYS[key].default


def tr_hc_in_range(tr_hc_samples: int, n_samples: int) -> bool:
    """``tr_hc_samples`` is 0 (off) or in ``[3, n_samples]``."""
    return not tr_hc_samples or 3 <= tr_hc_samples <= n_samples


def batch_fits_iv(batch_size: int, n_train: int, *, key: str) -> None:
    """A minibatch is a strict subset of the training set: ``batch_size < n_train``, else a
    one-line ConfigError naming ``key`` (``"[train] batch_size"``, ``"[probe] batch_size"``,
    ``"`batch_size`"``)."""
    if not batch_size < n_train:
        raise ConfigError(f"{key}: must be < the number of training samples ({n_train}); got {batch_size}")


def fits_model_iv(*, sources: Sequence[str], batch_size: int, top_k: int, n_train: int, n_params: int,
                  diag_params: int = 0, section: str | None = None) -> None:
    """The probe settings against the data and the model: the SGD source's batch (also the
    batch of ``diag_params``' SGD-noise diagonal) is smaller than the training set, ``top_k`` at most the parameter count.

    The one check of both, made at each boundary before any work: the run's assembly
    (``section="[probe]"``: keys named as in the config), the own-model API
    (``probe_model``/``probe_checkpoints``/``Recorder``) and :func:`~varprinciple.collect.probe.probe`
    (``section=None``: keys named as arguments). Raises a one-line ConfigError.

    Examples
    --------
    >>> fits_model_iv(sources=("sgd",), batch_size=8, top_k=20, n_train=100, n_params=10)
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: `top_k`: must be <= the number of parameters (10); got 20
    """
    def key(k: str) -> str:
        return f"`{k}`" if section is None else f"{section} {k}"

    if "sgd" in sources or diag_params:
        batch_fits_iv(batch_size, n_train, key=key("batch_size"))
    if top_k > n_params:
        raise ConfigError(f"{key('top_k')}: must be <= the number of parameters ({n_params}); got {top_k}")


def dropout_samples_problem(dropout_samples, exact_variance, tr_hc_samples) -> str | None:
    """Why ``dropout_samples`` is invalid beside ``exact_variance`` and ``tr_hc_samples`` (None when
    it is valid): unset, an integer >= 2, or 0 (no draws: b then comes from the exact moments'
    ``tr_hc_samples`` groups of samples, which need ``exact_variance`` and at least
    :data:`varprinciple.stats.relation_exact.MIN_GROUPS` groups for an interval)."""
    from ..stats.relation_exact import MIN_GROUPS
    if dropout_samples is None:
        return None
    if not _is_int(dropout_samples) or dropout_samples == 1 or dropout_samples < 0:
        return f"must be 0 or an integer >= 2 or unset; got {dropout_samples!r}"
    if dropout_samples == 0 and not exact_variance:
        return ("= 0 (no sampled dropout draws) needs `exact_variance` = true: the statistics then use the "
                "exact two-mask variances")
    if dropout_samples == 0 and _is_int(tr_hc_samples) and tr_hc_samples < MIN_GROUPS:
        return (f"= 0 (no sampled dropout draws) needs `tr_hc_samples` >= {MIN_GROUPS}: b's interval comes from "
                f"that many groups of samples; got {tr_hc_samples}")
    return None


def isotropic_reference_sampled(sources: Sequence[str], isotropic_of: str) -> bool:
    """The isotropic control's reference source is sampled too (or there is no control)."""
    return "isotropic" not in sources or isotropic_of in sources


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


@dataclass(frozen=True)
class ProbeSettings:
    """What a probe measures and how (all validated on construction).

    Parameters
    ----------
    top_k : int
        Number of top (largest algebraic) Hessian eigenpairs.
    n_samples : int
        Noise draws ``K`` per source per probe.
    sources : tuple of str
        Subset of ``("sgd", "dropout", "isotropic")``.
    batch_size : int
        Probe SGD batch size ``B`` (``B < n``); runs trained by GD still get SGD probes.
    n_random : int
        Random unit directions ``m`` (basis ``"random"``), drawn from the probe's generator.
    drop_prob : float or None
        DROP probability of the dropout source (PyTorch's convention; the paper's p is the
        keep probability ``1 - drop_prob``). None: each site's own probability. Given, it
        overrides every site's (``nn.Dropout(0)`` modules then become sites too).
    dropout_layers : tuple of str or None
        Module names whose outputs get dropout (needs ``drop_prob``; any other train-mode
        dropout is refused). None: every dropout the model applies in train mode
        (``nn.Dropout``, ``F.dropout``, attention dropout; :mod:`.noise.dropout_sites`), else
        (a model without dropout, ``drop_prob`` given) the input of its last ``nn.Linear``.
    isotropic_of : str
        Source whose covariance trace the isotropic control matches (must be sampled too).
    dtype : {"float64", "float32"}
    eig_tol : float
        eigsh tolerance (raised to 100 eps of the dtype).
    exact_variance : bool
        Log the exact projected SGD variance from per-sample gradients and the dropout
        source's exact variance, trace and Tr(HC), estimated without bias from two masks
        per sample (:mod:`.noise.dropout_exact`; about two per-sample-gradient passes).
    dropout_samples : int or None
        Sampled dropout draws ``K`` (None: ``n_samples``). With ``exact_variance`` the
        exact moments no longer come from the draws, so a smaller ``K`` is a cheaper choice;
        0 (needs ``exact_variance``) samples none: the statistics fit b from the exact
        variances and their per-group contributions (``docs/probes.md``), and the source
        costs about two per-sample-gradient passes.
    hutchinson_probes : int
        Rademacher probes for the deflated Hutchinson estimate of Tr(H) (>= 2).
    tr_hc_samples : int
        Full noise draws per source for the matrix-free Tr(HC) and rho (0 = skip; else 3..K).
    store_vectors_max_params : int
        Eigenvectors are logged only when the model has at most this many parameters.
    frozen_batchnorm : bool
        Allow BatchNorm layers (with running statistics): the probe runs the model in eval
        mode, so they normalise with their frozen running statistics. Off: refused.
    memory_budget_mb : int
        Working-memory budget of the probe (:mod:`.memory`): every buffer that grows with D or
        n is counted -- the Krylov basis (its size ``ncv`` is lowered to fit), the directions,
        the HVP graph (kept when it fits, else HVPs are summed over data chunks), per-sample
        gradients, the two-mask dropout pass and draws (chunked into what is left); when no
        setting fits, the probe is refused up front naming the budget it needs. The inputs
        and torch's start-up are outside the budget, unless the inputs are given as
        :class:`~varprinciple.collect.rows.NpyRows` (read from disk per chunk).
    blocks : "layers", tuple of str or None
        Per-layer probes (:mod:`.blocks`): ``"layers"`` (one block per module with parameters,
        weight and bias together) or names of parameters (``named_parameters()``) or modules.
        Per block, the top ``min(top_k, D_b)`` eigenpairs of the block-diagonal Hessian H_bb and
        ``n_random`` random unit directions supported on the block; every source's draws are
        projected on them too, rows tagged with the ``block`` column. None (default): off.
    diag_params : int
        Parameters sampled uniformly per block (``blocks``, else one block per layer) for the
        exact Hessian diagonal ``h_ii`` and SGD-noise variance ``c_ii``
        (:mod:`.diagonal`, table ``diagonal.parquet``); all of a smaller block. 0 (default): off.

    Examples
    --------
    >>> ProbeSettings(top_k=5, sources=["sgd", "isotropic"]).sources
    ('sgd', 'isotropic')
    >>> ProbeSettings(top_k=0)
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: `top_k` must be an integer >= 1; got 0.
    """

    top_k: int = _default("top_k")
    n_samples: int = _default("n_samples")
    sources: tuple[str, ...] = tuple(_default("sources"))
    batch_size: int = API_BATCH_SIZE
    n_random: int = _default("n_random")
    drop_prob: float | None = None
    dropout_layers: tuple[str, ...] | None = None
    isotropic_of: str = _default("isotropic_of")
    dtype: str = _default("dtype")
    eig_tol: float = _default("eig_tol")
    exact_variance: bool = _default("exact_variance")
    dropout_samples: int | None = None
    frozen_batchnorm: bool = _default("frozen_batchnorm")
    hutchinson_probes: int = _default("hutchinson_probes")
    tr_hc_samples: int = _default("tr_hc_samples")
    store_vectors_max_params: int = _default("store_vectors_max_params")
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB
    blocks: str | tuple[str, ...] | None = None
    diag_params: int = _default("diag_params")

    def __post_init__(self):
        from ._model import resolve_dtype
        from .blocks import LAYERS
        from .noise import source_names

        def need_int(name, lo=None):
            lo = PROBE_KEYS[name].lo if lo is None else lo
            v = getattr(self, name)
            if not _is_int(v) or v < lo:
                raise ConfigError(f"`{name}` must be an integer >= {lo}; got {v!r}.")

        for name in ("top_k", "n_samples", "batch_size", "n_random", "hutchinson_probes", "tr_hc_samples",
                     "store_vectors_max_params", "diag_params"):
            need_int(name)
        if not _is_num(self.memory_budget_mb) or not self.memory_budget_mb > 0:
            raise ConfigError(f"`memory_budget_mb` must be a positive number; got {self.memory_budget_mb!r}.")
        src = self.sources
        if isinstance(src, str) or not isinstance(src, (tuple, list)):
            raise ConfigError(f"`sources` must be a list of source names; got {src!r}.")
        allowed = source_names()
        for s in src:
            if s not in allowed:
                raise ConfigError(f"`sources` entry {s!r} is not one of {allowed}.")
        if not src:
            raise ConfigError(f"`sources` must name at least one of {allowed}; got none.")
        if len(set(src)) != len(src):
            raise ConfigError(f"`sources` has duplicates: {list(src)}.")
        object.__setattr__(self, "sources", tuple(str(s) for s in src))
        if self.isotropic_of not in PROBE_KEYS["isotropic_of"].choices:
            raise ConfigError(f"`isotropic_of` must be 'sgd' or 'dropout'; got {self.isotropic_of!r}.")
        if not isotropic_reference_sampled(self.sources, self.isotropic_of):
            raise ConfigError(f"`isotropic_of` = {self.isotropic_of!r} must also be in `sources` "
                              f"{list(self.sources)}.")
        if self.drop_prob is not None and (not _is_num(self.drop_prob) or not 0 < self.drop_prob < 1):
            raise ConfigError(f"`drop_prob` (the DROP probability) must be in (0, 1); got {self.drop_prob!r}.")
        if self.dropout_layers is not None:
            dl = self.dropout_layers
            if isinstance(dl, str) or not isinstance(dl, (tuple, list)) or not all(isinstance(x, str) for x in dl):
                raise ConfigError(f"`dropout_layers` must be a list of module names; got {dl!r}.")
            if not dl:
                raise ConfigError("`dropout_layers` must name at least one module (or be unset).")
            if self.drop_prob is None:
                raise ConfigError("`dropout_layers` needs `drop_prob` (the DROP probability) to be set.")
            object.__setattr__(self, "dropout_layers", tuple(dl))
        resolve_dtype(self.dtype)
        if not _is_num(self.eig_tol) or not 0 < self.eig_tol < 1:
            raise ConfigError(f"`eig_tol` must be in (0, 1); got {self.eig_tol!r}.")
        if not isinstance(self.frozen_batchnorm, bool):
            raise ConfigError(f"`frozen_batchnorm` must be true or false; got {self.frozen_batchnorm!r}.")
        if not isinstance(self.exact_variance, bool):
            raise ConfigError(f"`exact_variance` must be true or false; got {self.exact_variance!r}.")
        why = dropout_samples_problem(self.dropout_samples, self.exact_variance, self.tr_hc_samples)
        if why:
            raise ConfigError(f"`dropout_samples` {why}.")
        if not tr_hc_in_range(self.tr_hc_samples, self.n_samples):
            raise ConfigError(f"`tr_hc_samples` must be 0 or in [3, n_samples={self.n_samples}]; "
                              f"got {self.tr_hc_samples}.")
        if self.blocks is not None:
            b = self.blocks
            if isinstance(b, str):
                if b != LAYERS:
                    raise ConfigError(f"`blocks` must be \"layers\", a list of parameter/module names or None; "
                                      f"got {b!r}.")
            elif not isinstance(b, (tuple, list)) or not b or not all(isinstance(x, str) and x for x in b):
                raise ConfigError(f"`blocks` must be \"layers\" or a non-empty list of parameter/module names; "
                                  f"got {b!r}.")
            elif len(set(b)) != len(b):
                raise ConfigError(f"`blocks` has duplicates: {list(b)}.")
            else:
                object.__setattr__(self, "blocks", tuple(b))
        if ("dropout" in self.sources and not self.exact_variance and self.tr_hc_samples
                and self.tr_hc_samples > self.n_dropout):
            raise ConfigError(f"`tr_hc_samples` ({self.tr_hc_samples}) must be <= `dropout_samples` "
                              f"({self.n_dropout}) when `exact_variance` is false (Tr(HC) then uses "
                              "full dropout draws).")

    @property
    def n_dropout(self) -> int:
        """Sampled dropout draws: ``dropout_samples``, else ``n_samples``."""
        return self.n_samples if self.dropout_samples is None else int(self.dropout_samples)

    def to_dict(self) -> dict:
        """Plain-JSON form: every field, tuples as lists, ``blocks`` only when set (the one
        rendering of the settings: run.json's ``probe_settings`` of an own-model run, the
        Recorder's resume identity)."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        if self.blocks is None:
            del d["blocks"]  # run.json of a probe without blocks is as before
        if not self.diag_params:
            del d["diag_params"]  # nor without diagonals
        return d
