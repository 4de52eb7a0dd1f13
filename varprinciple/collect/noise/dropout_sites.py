"""Where dropout acts in a probed model: its sites, and the forward passes that apply the probe's masks.

Two ways a site gets its mask:

* **intercepted calls** (the default: every dropout the model applies in train mode). A scan of
  the model in train mode finds each dropout call -- ``nn.Dropout`` modules, ``F.dropout``,
  ``scaled_dot_product_attention(dropout_p > 0)``, ``nn.MultiheadAttention``'s and Hugging Face's
  attention dropout -- and the module issuing it. In the probe's masked forward passes only those
  modules run in train mode (not recursively: the rest of the model stays in eval mode) and a
  :class:`~._dropout_calls.DropoutInterceptor` replaces each call by the probe's mask, the k-th
  call of a forward pass being site k. So the draws and the exact two-mask moments are those of
  the model as trained, with masks the probe draws;
* **hooks on named modules** (``dropout_layers``, or the input of the last ``nn.Linear``):
  dropout the probe adds at ``drop_prob`` to a model trained without it there.

Masks are stored sample-major, ``(n, *shape)`` per site; a site's tensor may carry its samples
in any dimension (``batch_first=False`` transformers) or merged with another one (``bsz * heads``
inside ``nn.MultiheadAttention``): both are found by running the model on 1 and 2 samples.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ...errors import ConfigError
from .._model import ProbedModel, random_calls
from ._dropout_calls import DropoutInterceptor

__all__ = ["DropoutSite", "DropoutSites"]

_ATTENTION = "scaled_dot_product_attention"


class DropoutSite(NamedTuple):
    """One dropout site: ``name`` (the module issuing the call, ``#k`` for its k-th call in one
    forward pass; or the named module), ``module``, ``drop_prob`` (DROP probability), ``where``
    (``"call"``: an intercepted dropout call; ``"output"``/``"input"``: a hook on ``module``),
    ``kind`` (``module``: an ``nn.Dropout``; ``functional``: ``F.dropout``/``torch.dropout`` from
    another module; ``attention``: attention dropout -- ``dropout_p`` of
    ``scaled_dot_product_attention``, inside ``nn.MultiheadAttention``, or ``F.dropout`` issued by a
    module whose class name contains "Attention"/"Attn"; ``layer``: dropout the probe adds to a
    layer) and ``call`` (the intercepted function, or ``"output"``/``"input"``)."""

    name: str
    module: nn.Module
    drop_prob: float
    where: str
    kind: str
    call: str


def _is_site(call: str, p: float, training: bool, override: bool) -> bool:
    """A dropout call is a site when it drops in training: ``p > 0``; with ``drop_prob`` given
    (``override``), every ``F.dropout``/``torch.dropout`` call made in training (``nn.Dropout(0)``
    included) is one too (attention kernels with ``dropout_p = 0`` make no dropout call)."""
    return training and (p > 0 or (override and call != _ATTENTION))


def _kind(call: str, in_attention: bool, issuer: nn.Module) -> str:
    if call == _ATTENTION or in_attention:
        return "attention"
    if isinstance(issuer, nn.Dropout):
        return "module"
    low = type(issuer).__name__.lower()
    return "attention" if ("attention" in low or "attn" in low) else "functional"


class DropoutSites:
    """Where dropout acts in a probed model, with explicit, externally drawn masks.

    Default (``layers`` None): every dropout call the model makes in train mode (see the module
    docstring), each at its own drop probability, or at ``drop_prob`` when given (then
    ``nn.Dropout(0)`` modules count too); calls with ``p = 0`` are skipped (listed in
    :attr:`skipped`). With ``layers``: dropout at ``drop_prob`` on those modules' outputs (any
    other train-mode dropout is refused: switch it off first). When the model applies no dropout,
    no layers are named and ``drop_prob`` is given: the *input of the last* ``nn.Linear`` (dropout
    at the last hidden layer, the setting of the paper's :math:`R_1`). Outside the masked passes
    (:meth:`masked`, :meth:`loss`, ...) the model is the probe's eval-mode model: dropout off for
    the Hessian and SGD noise.
    """

    def __init__(self, pm: ProbedModel, *, drop_prob: float | None = None,
                 layers: tuple[str, ...] | None = None):
        self.pm = pm
        self._override = drop_prob is not None
        self._masks: tuple | None = None
        self._cut_h: torch.Tensor | None = None
        self._capture: dict | None = None
        self._record = None
        self._count = 0
        self._train_mods: list[nn.Module] = []
        self._handles = []
        self.skipped: list[str] = []
        self.cut = -1
        mods = dict(pm.module.named_modules())
        calls, stray, channel = self._scan()
        if channel:
            call, (where, mod) = channel[0]
            raise ConfigError(f"dropout source: {call} in {where!r} ({type(mod).__name__}) is channel or alpha "
                              f"dropout, which the probe cannot draw (elementwise scaled Bernoulli masks only); set "
                              f"its p to 0 or remove 'dropout' from `sources`.")
        if stray:
            more = f" (+{len(stray) - 1} more)" if len(stray) > 1 else ""
            raise ConfigError(f"dropout source: the model draws random numbers in train mode outside any dropout "
                              f"call the probe can mask: {stray[0]}{more}; switch them off for the probe or "
                              f"remove 'dropout' from `sources`.")
        if layers is not None:
            sites = self._named_sites(layers, mods, drop_prob, calls)
        else:
            is_site = [_is_site(c[0], c[1], c[2], self._override) for c in calls]
            active = [c for c, a in zip(calls, is_site) if a]
            all_names = self._names(calls)
            self.skipped = [nm for nm, c, a in zip(all_names, calls, is_site) if c[2] and c[1] == 0 and not a]
            if active:
                names = [nm for nm, a in zip(all_names, is_site) if a]  # numbered over every call of a module
                sites = [DropoutSite(nm, mod, float(drop_prob if drop_prob is not None else p), "call",
                                     _kind(call, att, mod), call)
                         for nm, (call, p, _, att, (_, mod)) in zip(names, active)]
                seen = {}
                for c in active:
                    seen[id(c[4][1])] = c[4][1]
                self._train_mods = list(seen.values())
            elif drop_prob is None:
                raise ConfigError("dropout source: the model applies no dropout in train mode (no nn.Dropout, "
                                  "F.dropout or attention dropout with p > 0); set `drop_prob` (and optionally "
                                  "`dropout_layers`).")
            else:
                lin = [k for k, m in mods.items() if isinstance(m, nn.Linear)]
                if not lin:
                    raise ConfigError("dropout source: the model applies no dropout and has no nn.Linear; "
                                      "name `dropout_layers`.")
                sites = [DropoutSite(lin[-1], mods[lin[-1]], float(drop_prob), "input", "layer", "input")]
        for s in sites:
            if not 0.0 < s.drop_prob < 1.0:
                raise ConfigError(f"drop probability at {s.name!r} must be in (0, 1); got {s.drop_prob}.")
        self.sites = sites
        self._intercept = sites[0].where == "call"
        for i, s in enumerate(sites):
            if s.where == "output":
                self._handles.append(s.module.register_forward_hook(self._out_hook(i)))
            elif s.where == "input":
                self._handles.append(s.module.register_forward_pre_hook(self._in_hook(i)))
        self.shapes, self.bdims, self.merged = self._record_shapes()

    # ------------------------------------------------------------------ set-up
    def _scan(self):
        """The model in train mode, every dropout call recorded as ``(call, p, training,
        in_attention, (name, issuing module))`` (identity: nothing random runs), channel dropout
        calls, and any other random op (a refusal)."""
        module = self.pm.module
        names = {id(m): (n or "<root>", m) for n, m in module.named_modules()}
        stack: list[int] = []
        calls, channel = [], []

        def top():
            return names[stack[-1] if stack else id(module)]

        def on_drop(call, p, training, x, att):
            calls.append((call, p, training, att, top()))
            return x

        mode = DropoutInterceptor(on_drop, lambda call: channel.append((call, top())))
        def push(mod, _i):
            stack.append(id(mod))

        def pop(_m, _i, _o):
            stack.pop()

        hs = [m.register_forward_pre_hook(push) for m in module.modules()]
        hs += [m.register_forward_hook(pop) for m in module.modules()]

        def run():
            with mode:
                self.pm.forward(self.pm.params, self.pm.X[:2])
        try:
            stray = random_calls(module, run, train=True)
        finally:
            for h in hs:
                h.remove()
        return calls, ([] if channel else stray), channel

    @staticmethod
    def _names(calls) -> list[str]:
        count: dict[str, int] = {}
        out = []
        for c in calls:
            nm = c[4][0]
            count[nm] = count.get(nm, 0) + 1
            out.append(nm if count[nm] == 1 else f"{nm}#{count[nm]}")
        return out

    def _named_sites(self, layers, mods, drop_prob, calls) -> list[DropoutSite]:
        if not layers:
            raise ConfigError("`dropout_layers`: give at least one module name (or None for every dropout the "
                              "model applies).")
        if drop_prob is None:
            raise ConfigError("`dropout_layers` needs `drop_prob` (the DROP probability) to be set.")
        sites = []
        for name in layers:
            if name not in mods:
                known = ", ".join(repr(k) for k in mods if k) or "none"
                raise ConfigError(f"`dropout_layers` names unknown module {name!r}; modules: {known}.")
            m = mods[name]
            sites.append(DropoutSite(name, m, float(drop_prob), "output",
                                     "module" if isinstance(m, nn.Dropout) else "layer", "output"))
        own = {id(s.module) for s in sites if isinstance(s.module, nn.Dropout)}
        out = [c for c in calls if c[2] and c[1] > 0 and id(c[4][1]) not in own]
        if out:
            call, p, _, _, (where, mod) = out[0]
            more = f" (+{len(out) - 1} more)" if len(out) > 1 else ""
            raise ConfigError(f"dropout source: the model applies dropout in train mode outside `dropout_layers`: "
                              f"{call} in {where!r} ({type(mod).__name__}, p={p:g}){more}; set its p to 0, name it "
                              f"in `dropout_layers`, or leave `dropout_layers` unset to include every dropout the "
                              f"model applies.")
        return sites

    def _record_shapes(self):
        """Per site: the sample-major mask shape, the sample dimension of its tensor and whether
        the samples are merged with another dimension there; also the first site (the cut) and
        the parameters used before it (the cut-site shortcut's saving)."""
        pm = self.pm
        own = {id(m): [f"{mn}.{p}" if mn else p for p, _ in m.named_parameters(recurse=False)]
               for mn, m in pm.module.named_modules()}
        lower: set[str] = set()
        recs: list[list] = []
        first: list = []

        def mark(mod, _i, _o):
            if not first or (self.sites[first[0]].module is mod and self.sites[first[0]].where == "output"):
                lower.update(own.get(id(mod), []))

        outs = []
        for b in (1, 2):
            rec: list = []

            def record(i, t, rec=rec):
                if not first:
                    first.append(i)
                rec.append((i, tuple(t.shape)))

            hs = [m.register_forward_hook(mark) for m in pm.module.modules()] if b == 1 else []
            self._record = record
            try:
                with torch.no_grad(), self._active():
                    outs.append(pm.forward(pm.params, pm.X[:b]))
            finally:
                self._record = None
                for h in hs:
                    h.remove()
            recs.append(rec)
        n_s = len(self.sites)
        for b, rec in zip((1, 2), recs):
            got = sorted({i for i, _ in rec})
            if got != list(range(n_s)):
                miss = [self.sites[i].name for i in range(n_s) if i not in got]
                raise ConfigError(f"dropout site {miss[0]!r} is not used by the model's forward.")
        if self._intercept:  # only dropout may change when the issuing modules run in train mode
            with torch.no_grad():
                ref = pm.forward(pm.params, pm.X[:2])
            a = [t for t in tree_leaves(outs[1]) if isinstance(t, torch.Tensor) and t.is_floating_point()]
            r = [t for t in tree_leaves(ref) if isinstance(t, torch.Tensor) and t.is_floating_point()]
            tol = 1e-9 if pm.dtype == torch.float64 else 1e-4
            bad = len(a) != len(r) or any(x.shape != z.shape for x, z in zip(a, r))
            if not bad:
                diff = max((float((x - z).abs().max() / z.abs().max().clamp_min(1e-30)) for x, z in zip(a, r)),
                           default=0.0)
                bad = diff > tol
            if bad:
                mods = ", ".join(sorted({s.name.split('#')[0] for s in self.sites}))
                raise ConfigError(f"dropout source: running the modules that apply dropout ({mods}) in train mode "
                                  f"changes the model beyond dropout, so the probe cannot reproduce its train-mode "
                                  f"dropout; remove 'dropout' from `sources`.")
        shapes, bdims, merged = [], [], []
        s1 = {i: s for i, s in recs[0]}
        s2 = {i: s for i, s in recs[1]}
        for i, site in enumerate(self.sites):
            a, b = s1[i], s2[i]
            dims = [j for j in range(len(a)) if len(a) == len(b) and a[j] != b[j]]
            if len(a) != len(b) or len(dims) != 1 or b[dims[0]] != 2 * a[dims[0]]:
                raise ConfigError(f"dropout source: the tensor of dropout site {site.name!r} ({site.call}) has no "
                                  f"single sample dimension (shape {a} for 1 sample, {b} for 2), so the probe cannot "
                                  f"draw its masks per sample; set its p to 0 or remove 'dropout' from `sources`.")
            j = dims[0]
            c = a[j]
            bdims.append(j)
            merged.append(c > 1)
            shapes.append(a if c > 1 else a[:j] + a[j + 1:])
        self.cut = first[0]
        self.lower_numel = int(sum(k for name, k in zip(pm.names, pm.numels) if name in lower))
        return shapes, bdims, merged

    # ------------------------------------------------------------------ masked forward passes
    def _from_samples(self, i: int, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A sample-major ``(n, *shape)`` tensor in the layout of site ``i``'s tensor ``t``."""
        m = m.movedim(0, self.bdims[i])
        return m.reshape(t.shape) if self.merged[i] else m

    def _to_samples(self, i: int, t: torch.Tensor) -> torch.Tensor:
        j = self.bdims[i]
        if self.merged[i]:
            c = self.shapes[i][j]
            t = t.reshape(*t.shape[:j], t.shape[j] // c, c, *t.shape[j + 1:])
        return t.movedim(j, 0)

    def _site_value(self, i, t):
        if self._record is not None:
            self._record(i, t)
            return t
        if i == self.cut:
            if self._capture is not None:
                self._capture["h"] = self._to_samples(i, t)
            if self._cut_h is not None:  # already masked (see cut_loss)
                return self._from_samples(i, self._cut_h, t)
        return t if self._masks is None else t * self._from_samples(i, self._masks[i], t)

    def _idle(self) -> bool:
        return self._masks is None and self._cut_h is None and self._capture is None and self._record is None

    def _out_hook(self, i):
        def hook(_mod, _inp, out):
            return None if self._idle() else self._site_value(i, out)
        return hook

    def _in_hook(self, i):
        def hook(_mod, inp):
            return None if self._idle() else (self._site_value(i, inp[0]),) + tuple(inp[1:])
        return hook

    def _on_drop(self, call, p, training, x, _att):
        if not _is_site(call, p, training, self._override):
            return None
        i = self._count
        self._count += 1
        if i >= len(self.sites) or self.sites[i].call != call:
            raise ConfigError(f"dropout source: the model's dropout calls differ between forward passes ({call} "
                              f"as dropout call {i + 1}, expected "
                              f"{self.sites[i].call if i < len(self.sites) else 'none'}); the probe needs the same "
                              f"dropout calls in every forward pass.")
        return self._site_value(i, x)

    @contextlib.contextmanager
    def _active(self):
        """A masked forward pass: with intercepted sites, the issuing modules in train mode and
        their dropout calls routed to the sites (in call order)."""
        if not self._intercept:
            yield
            return
        self._count = 0
        old = [(m, m.training) for m in self._train_mods]
        for m in self._train_mods:
            m.training = True
        try:
            with DropoutInterceptor(self._on_drop):
                yield
        finally:
            for m, t in old:
                m.training = t
        if self._count != len(self.sites):
            raise ConfigError(f"dropout source: the model made {self._count} dropout calls in a forward pass, "
                              f"{len(self.sites)} at set-up; the probe needs the same dropout calls in every pass.")

    @contextlib.contextmanager
    def masked(self, masks: tuple[torch.Tensor, ...]):
        """Forward passes inside apply ``masks`` (scaled, one ``(n, *shape)`` tensor per site)."""
        self._masks = masks
        try:
            with self._active():
                yield
        finally:
            self._masks = None

    def loss(self, params: dict, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:math:`R_{drop}(\\theta, \\eta)` on the full batch for one draw of masks ``(n, *shape)``."""
        with self.masked(masks):
            return self.pm.batch_loss(params, self.pm.X, self.pm.y)

    def one_sample_loss(self, params: dict, x: torch.Tensor, y: torch.Tensor,
                        masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:math:`\\ell(\\theta, \\eta; x, y)` of one sample with its masks ``(*shape)`` per site."""
        with self.masked(tuple(m.unsqueeze(0) for m in masks)):
            return self.pm.one_sample_loss(params, x, y)

    def cut_loss(self, params: dict, a: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """R_drop with the first site's *masked* tensor replaced by ``a`` (sample-major; the graph
        is cut there; the other sites use ``masks``)."""
        self._cut_h = a
        try:
            with self.masked(masks):
                return self.pm.batch_loss(params, self.pm.X, self.pm.y)
        finally:
            self._cut_h = None

    def cut_value(self, params: dict) -> torch.Tensor:
        """The first site's tensor (before its mask, sample-major) at ``params``, dropout off."""
        store: dict = {}
        self._capture = store
        try:
            with self._active():
                self.pm.forward(params, self.pm.X)
        finally:
            self._capture = None
        return store["h"]

    # ------------------------------------------------------------------ masks
    def fast_path_pays(self, d: int) -> bool:
        """Whether the cut-site shortcut should beat exact per-draw gradients: per sample it costs
        about 3 x (parameters above the cut) + d x (units at the cut) multiply-adds against
        3 x D for a full forward+backward pass; use it when that is under half."""
        upper = self.pm.n_params - self.lower_numel
        cut_units = int(np.prod(self.shapes[self.cut]))
        return 3 * upper + d * cut_units < 1.5 * self.pm.n_params

    @property
    def drop_probs(self) -> list[float]:
        return [s.drop_prob for s in self.sites]

    @property
    def unit_numel(self) -> int:
        """Mask elements per sample over all sites."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def describe(self) -> list[dict]:
        """JSON-ready sites: name, kind, call, drop_prob, where (run.json ``dropout_sites``)."""
        return [{"name": s.name, "kind": s.kind, "call": s.call, "drop_prob": s.drop_prob, "where": s.where}
                for s in self.sites]

    def draw_keeps(self, K: int, *, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``K`` draws of boolean keep masks, one ``(K, n, *shape)`` tensor per site, iid with
        P(keep) = 1 - drop_prob (from float32 uniforms: exact to 2^-24, about half the cost of
        float64 ones; an exact one-random-byte-per-unit scheme measured no faster)."""
        return tuple((torch.rand((K, self.pm.n, *s), generator=generator, dtype=torch.float32) >= p)
                     .to(self.pm.device) for p, s in zip(self.drop_probs, self.shapes))

    def scales(self) -> list[torch.Tensor]:
        """Per site the inverse keep probability 1/(1 - drop_prob) as a 0-d tensor."""
        return [torch.tensor(1.0 / (1.0 - p), dtype=self.pm.dtype, device=self.pm.device) for p in self.drop_probs]

    def to_masks(self, keeps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Scaled float masks (``keep / (1 - drop_prob)``) from boolean keeps."""
        zero = torch.zeros((), dtype=self.pm.dtype, device=self.pm.device)
        return tuple(torch.where(k, sc, zero) for k, sc in zip(keeps, self.scales()))

    def draw_masks(self, K: int, *, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``K`` draws of scaled masks, one ``(K, n, *shape)`` tensor per site (iid Bernoulli),
        as dropout in train mode applies them."""
        return self.to_masks(self.draw_keeps(K, generator=generator))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
