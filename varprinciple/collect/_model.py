"""Private: a functional view of a user's ``nn.Module`` for the probes.

:class:`ProbedModel` deep-copies the model (the caller's model is never modified),
casts it to the probe dtype, switches it to eval mode (dropout off) and exposes the
trainable parameters as one flat vector ``theta`` of length ``D`` together with
``functional_call``-based losses, so every probe differentiates the same function.
"""

from __future__ import annotations

import copy
import hashlib
import logging

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError, InputError
from .losses import CustomLoss, Loss, check_targets, mean_loss, per_sample_loss, select_output
from .rows import NpyRows

logger = logging.getLogger(__name__)

#: Module types whose output for one sample depends on the other samples of the batch.
BATCH_DEPENDENT: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm,)

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float64"``/``"float32"`` (or a torch dtype) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ConfigError(f"`dtype` must be one of {sorted(_DTYPES)}; got {dtype!r}.")


def state_fingerprint(model: nn.Module) -> str:
    """A hash of a model's state (every parameter and buffer: name, dtype, shape, bytes).

    Written to run.json as ``checkpoint_fingerprint`` (per probe step), so that two runs
    probing the same trained network (a re-probe of a checkpoint, a copy) are recognised
    by ``varprinciple test`` and counted once.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> a = nn.Linear(2, 1); b = nn.Linear(2, 1); _ = b.load_state_dict(a.state_dict())
    >>> state_fingerprint(a) == state_fingerprint(b)
    True
    >>> with torch.no_grad():
    ...     b.bias += 1e-7
    >>> state_fingerprint(a) == state_fingerprint(b)
    False
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def check_probe_model(model: nn.Module, *, frozen_batchnorm: bool = False) -> None:
    """Refuse models with batch-dependent layers (BatchNorm): per-sample gradients,
    SGD noise and the full-batch Hessian would each see different functions.

    With ``frozen_batchnorm`` BatchNorm layers that track running statistics are allowed: the
    probe runs the model in eval mode, where they normalise with those frozen statistics (an
    affine per-sample map), so every probe differentiates one per-sample function. Layers
    without running statistics (``track_running_stats=False``) are still refused."""
    if not isinstance(model, nn.Module):
        raise InputError(f"`model` must be a torch.nn.Module; got {type(model).__name__}.")
    for name, mod in model.named_modules():
        if isinstance(mod, BATCH_DEPENDENT):
            if frozen_batchnorm and getattr(mod, "track_running_stats", False) \
                    and getattr(mod, "running_mean", None) is not None:
                continue
            hint = ("it has no running statistics to freeze" if frozen_batchnorm else
                    "set `frozen_batchnorm` to probe it in eval mode with its running statistics frozen, "
                    "or use LayerNorm/GroupNorm")
            raise ConfigError(
                f"model layer {name or '<root>'!r} ({type(mod).__name__}) depends on the batch; "
                f"probes refuse batch-dependent layers ({hint}).")


class ProbedModel:
    """Functional, flat-parameter view of a model at fixed data (private helper)."""

    def __init__(self, model: nn.Module, loss: Loss | CustomLoss, X: torch.Tensor, y: torch.Tensor, *,
                 dtype: torch.dtype, frozen_batchnorm: bool = False):
        check_probe_model(model, frozen_batchnorm=frozen_batchnorm)
        if not isinstance(X, (torch.Tensor, NpyRows)) or not isinstance(y, torch.Tensor):
            raise InputError("`X` must be a torch tensor or NpyRows and `y` a torch tensor.")
        if X.ndim < 1 or X.shape[0] < 2:
            raise InputError(f"`X` needs at least 2 samples (rows); got shape {tuple(X.shape)}.")
        m = copy.deepcopy(model).to(dtype=dtype)
        m.eval()
        self.module = m
        self.loss = loss
        self.dtype = dtype
        named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
        if not named:
            raise InputError("`model` has no trainable parameters (requires_grad=True).")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n_params = int(sum(self.numels))
        self.params = {n: p.detach() for n, p in named}
        self.consts = {n: p.detach() for n, p in m.named_parameters() if not p.requires_grad}
        self.consts.update(dict(m.named_buffers()))
        dev = named[0][1].device
        self.device = dev
        # the data stay in their own dtype (float32 data are not doubled in memory); forward
        # casts each chunk it is given to the probe dtype. NpyRows inputs stay on disk: every
        # X[...] reads those rows (docs/probes.md, "Memory")
        self.X = X.to(dev).detach()
        with torch.no_grad():
            out = self.forward(self.params, self.X[:2])
        if isinstance(loss, CustomLoss):
            if not isinstance(y, torch.Tensor) or y.shape[0] != self.X.shape[0]:
                raise InputError(f"`y` must be a tensor with one row per sample ({self.X.shape[0]}).")
            self.y = y.to(dev).detach()
            if torch.is_floating_point(self.y):
                self.y = self.y.to(dtype)
            with torch.no_grad():
                try:
                    v = loss.fn(out, self.y[:2])
                except Exception as exc:
                    raise ConfigError(f"custom loss {loss.value!r} failed on the model's output: "
                                      f"{' '.join(str(exc).split())[:200]}") from None
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != (2,):
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ConfigError(f"custom loss {loss.value!r} must return one loss per sample, shape (n,) "
                                  f"(e.g. reduction='none'); got {got} for 2 samples.")
        else:
            o = select_output(loss, out)
            self.y = check_targets(loss, self.forward_nograd_shape(o, self.X.shape[0]), y.to(dev)).detach()
        self.n = int(self.X.shape[0])
        self.theta = self.flatten(self.params)
        try:
            rnd = random_calls(m, lambda: self.forward(self.params, self.X[:2]), train=False)
        except (ConfigError, InputError):
            raise
        except Exception as exc:  # an op the dispatch-mode scan cannot trace: skip the check, say so
            logger.warning("could not scan the model for randomness in eval mode (%s)", exc)
            rnd = []
        if rnd:
            raise ConfigError(f"the model draws random numbers in eval mode ({rnd[0]}); probes need a "
                              "deterministic function of the parameters (dropout must follow `self.training`).")

    @staticmethod
    def forward_nograd_shape(out: torch.Tensor, n: int) -> torch.Tensor:
        """An uninitialised stand-in with the output shape for ``n`` samples (for checks)."""
        return out.new_empty((n, *out.shape[1:]))

    def subset(self, start: int, stop: int) -> "ProbedModel":
        """A shallow view of the same model on samples ``start:stop`` (data chunking)."""
        sub = copy.copy(self)
        sub.X, sub.y = self.X[start:stop], self.y[start:stop]
        sub.n = int(sub.X.shape[0])
        return sub

    # ------------------------------------------------------------------ functional calls
    def forward(self, params: dict, X: torch.Tensor | NpyRows) -> torch.Tensor:
        if isinstance(X, NpyRows):  # a full-batch use of on-disk inputs: read them all
            X = X[:]
        if torch.is_floating_point(X) and X.dtype != self.dtype:
            X = X.to(self.dtype)
        return functional_call(self.module, {**params, **self.consts}, (X,))

    def batch_loss(self, params: dict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mean_loss(self.loss, self.forward(params, X), y)

    def sample_losses(self, params: dict, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(self.loss, self.forward(params, X), y)

    def one_sample_loss(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mean_loss(self.loss, self.forward(params, x.unsqueeze(0)), y.unsqueeze(0))

    # ------------------------------------------------------------------ flat <-> dict
    def flatten(self, d: dict, *, batched: bool = False) -> torch.Tensor:
        if batched:
            k = d[self.names[0]].shape[0]
            return torch.cat([d[n].reshape(k, -1) for n in self.names], dim=1)
        return torch.cat([d[n].reshape(-1) for n in self.names])

    def unflatten(self, vec: torch.Tensor) -> dict:
        """Split a flat vector (or a ``(..., D)`` batch of them) into parameter-shaped views."""
        lead = vec.shape[:-1]
        out, i = {}, 0
        for n, s, k in zip(self.names, self.shapes, self.numels):
            out[n] = vec[..., i:i + k].reshape(*lead, *s)
            i += k
        return out

    def activation_numel(self) -> int:
        """Total number of module-output elements for one sample (a memory estimate)."""
        total = 0

        def hook(_mod, _inp, out):
            nonlocal total
            if isinstance(out, torch.Tensor):
                total += out[0].numel()

        hs = [m.register_forward_hook(hook) for m in self.module.modules()]
        try:
            with torch.no_grad():
                self.forward(self.params, self.X[:1])
        finally:
            for h in hs:
                h.remove()
        return max(total, 1)


_RANDOM_OPS = ("dropout", "bernoulli", "rand", "normal", "uniform", "multinomial", "poisson")


def random_calls(module: nn.Module, call, *, train: bool, allowed: frozenset[int] = frozenset()) -> list[str]:
    """Random operations ``call()`` runs through ``module`` (in train or eval mode), each named
    with the innermost module that issued it, as ``"aten.bernoulli_.float in 'layers.0' (Dropout)"``.
    Calls issued directly by a module whose ``id`` is in ``allowed`` are skipped; attention
    kernels count when their ``dropout_p`` is positive (their dropout may also surface as the
    random op inside them)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    names = {id(m): (n or "<root>", type(m)) for n, m in module.named_modules()}
    stack: list[int] = []
    found: list[str] = []

    class _Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            op = func.name()
            hit = any(r in op.split("::")[-1].split(".")[0] for r in _RANDOM_OPS)
            if "scaled_dot_product" in op:
                argn = [a.name for a in func._schema.arguments]
                p = kwargs.get("dropout_p", args[argn.index("dropout_p")]
                               if "dropout_p" in argn and argn.index("dropout_p") < len(args) else 0.0)
                hit = float(p) > 0
                op = f"{op} (dropout_p={float(p):g})"
            if hit:
                top = stack[-1] if stack else id(module)
                where, typ = names.get(top, ("<root>", type(module)))
                if top not in allowed:
                    found.append(f"{op.replace('::', '.')} in {where!r} ({typ.__name__})")
            return func(*args, **kwargs)

    def push(mod, _i):
        stack.append(id(mod))

    def pop(_mod, _i, _o):
        stack.pop()

    hs = []
    for m in module.modules():
        hs.append(m.register_forward_pre_hook(push))
        hs.append(m.register_forward_hook(pop))
    was = module.training
    saved = {k: b.clone() for k, b in module.named_buffers()}  # train mode may update BatchNorm statistics
    module.train(train)
    try:
        with torch.no_grad(), _Spy():
            call()
    finally:
        module.train(was)
        with torch.no_grad():
            for k, b in module.named_buffers():
                b.copy_(saved[k])
        for h in hs:
            h.remove()
    return list(dict.fromkeys(found))
