"""The noise-source interface: a new source is one registered class; the probe needs no edit."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple import io  # noqa: E402
from varprinciple.collect.noise import (SOURCES, NoiseDraws, NoiseSourceBase, get_source, project,  # noqa: E402
                                        register_source, source_names)
from varprinciple.collect.probe import NoiseSource, ProbeSettings, probe  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


def test_builtin_sources_are_registered_and_match_the_enum():
    assert source_names() == ["sgd", "dropout", "isotropic"] == [s.value for s in NoiseSource]
    assert get_source("isotropic").after_others and not get_source("sgd").after_others
    with pytest.raises(ConfigError, match=r"unknown noise source 'adam'; registered: \['sgd', 'dropout', 'isotropic'\]"):
        get_source("adam")

    class Dup(NoiseSourceBase):
        name = "sgd"
    with pytest.raises(ConfigError, match="noise source 'sgd' is already registered by SGDSource"):
        register_source(Dup)

    class Nameless(NoiseSourceBase):
        pass
    with pytest.raises(ConfigError, match="noise source Nameless has no `name`"):
        register_source(Nameless)


def test_a_new_source_runs_through_the_probe_unchanged(tmp_path):
    @register_source
    class Rademacher(NoiseSourceBase):
        """Random-sign multiples of the full-batch gradient: variance ||g||^2 ... along g."""

        name = "rademacher-test"

        def sample(self, ctx):
            g = ctx.op.gradient
            K = ctx.settings.n_samples
            s = (torch.randint(0, 2, (K, 1), generator=ctx.generator) * 2 - 1).to(g.dtype)
            full = s * g
            ev = ((g @ ctx.directions) ** 2).numpy()
            return NoiseDraws(self.name, project(full, ctx.directions).numpy(), full[:ctx.n_full],
                              float(g @ g), True, ev)

    try:
        X = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
        y = X[:, :1] * 2
        torch.manual_seed(0)
        s = ProbeSettings(top_k=2, n_samples=40, batch_size=5, n_random=1, hutchinson_probes=2, tr_hc_samples=4,
                          sources=("sgd", "rademacher-test"))
        res = probe(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), "mse", X, y, settings=s, step=0,
                    generator=torch.Generator().manual_seed(1))
        r = res.noise[res.noise.source == "rademacher-test"]
        assert len(r) == 40 * 3
        ev = res.exact_variance.query("source == 'rademacher-test'")["variance"].to_numpy()
        vals = r["value"].to_numpy().reshape(40, 3)
        np.testing.assert_allclose(vals ** 2, np.broadcast_to(ev, vals.shape), rtol=1e-10)  # |s| = 1
        f = res.flatness.query("source == 'rademacher-test'").set_index("quantity")["estimate"]
        assert {"tr_hc", "tr_c", "rho", "tr_c_exact"} <= set(f.index)
        io.write_run(tmp_path / "r", {"run_id": "r", "method": "gd"}, eigen=res.eigen, noise=res.noise,
                     tables=res.tables())
    finally:
        SOURCES.pop("rademacher-test", None)
    with pytest.raises(ConfigError, match=r"`sources` entry 'rademacher-test' is not one of"):
        ProbeSettings(sources=("rademacher-test",))


_TOY_SOURCE = '''
"""A toy noise source: random-sign multiples of the full-batch gradient."""
import torch

from varprinciple.collect.noise import NoiseDraws, NoiseSourceBase, project, register_source


@register_source
class ToySource(NoiseSourceBase):
    name = "toy-test"

    def sample(self, ctx):
        g = ctx.op.gradient
        s = (torch.randint(0, 2, (ctx.settings.n_samples, 1), generator=ctx.generator) * 2 - 1).to(g.dtype)
        full = s * g
        return NoiseDraws(self.name, project(full, ctx.directions).numpy(), full[:ctx.n_full], float(g @ g), True,
                          ((g @ ctx.directions) ** 2).numpy())
'''


def test_a_toy_source_is_one_module_and_one_registration_line(tmp_path, monkeypatch):
    """Adding a source: one new module, one line that imports (registers) it; the config, the
    probe settings and `collect` then accept it with no other edit."""
    import importlib

    from varprinciple.collect.config import validate_config
    from varprinciple.collect.run import collect
    from varprinciple.io import read_logset

    cfg_raw = {"data": {"n_train": 40}, "model": {"widths": [3]}, "train": {"method": "gd", "steps": 3},
               "probe": {"top_k": 2, "n_samples": 6, "n_random": 1, "hutchinson_probes": 2, "tr_hc_samples": 0,
                         "batch_size": 8, "sources": ["sgd", "toy-test"]}}
    with pytest.raises(ConfigError, match=r"\[probe\] sources.*must be one of 'sgd', 'dropout', 'isotropic'"):
        validate_config(cfg_raw)
    (tmp_path / "toy_noise_source.py").write_text(_TOY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("toy_noise_source")  # the registration line
        cfg = validate_config(cfg_raw)
        assert ProbeSettings(sources=("toy-test",)).sources == ("toy-test",)
        res = collect(cfg, tmp_path / "logs")
        noise = read_logset(res.out).runs[0].noise
        assert set(noise["source"]) == {"sgd", "toy-test"}
        assert (noise["source"] == "toy-test").sum() == 6 * 3  # K draws x (2 eigenvectors + 1 random)
    finally:
        SOURCES.pop("toy-test", None)
        monkeypatch.delitem(sys.modules, "toy_noise_source", raising=False)
