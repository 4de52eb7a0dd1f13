"""Models: shapes, module names the probes rely on, explicit-generator initialisation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect.config import validate_config  # noqa: E402
from varprinciple.collect.models import build_model, describe_model, dropout_module_names, n_params  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.torch


def model_cfg(**kw):
    return validate_config({"model": kw, "probe": {"sources": ["sgd"]}})["model"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mlp_shapes_names_and_params():
    m = build_model(model_cfg(widths=[50, 50]), input_shape=(8, 8), n_outputs=10, drop_prob=0.2, generator=gen())
    assert n_params(m) == 64 * 50 + 50 + 50 * 50 + 50 + 50 * 10 + 10 == 6310
    assert dropout_module_names(m) == ["drop0", "drop1"]
    assert all(m.get_submodule(n).p == 0.2 for n in dropout_module_names(m))
    assert m(torch.zeros(5, 8, 8)).shape == (5, 10)
    assert "fc0:64->50" in describe_model(m) and "drop1:p_drop=0.2" in describe_model(m)
    m2 = build_model(model_cfg(widths=[7, 5], dropout_layers=[1], activation="tanh", bias=False),
                     input_shape=(3,), n_outputs=2, drop_prob=0.5, generator=gen())
    assert [n for n, _ in m2.named_children()] == ["flatten", "fc0", "act0", "fc1", "act1", "drop1", "out"]
    assert isinstance(m2.act0, nn.Tanh)
    assert all(not n.endswith("bias") for n, _ in m2.named_parameters())
    assert n_params(m2) == 3 * 7 + 7 * 5 + 5 * 2
    m3 = build_model(model_cfg(widths=[4]), input_shape=(3,), n_outputs=2, drop_prob=None, generator=gen())
    assert dropout_module_names(m3) == []


def test_linear_and_cnn():
    lin = build_model(model_cfg(arch="linear", bias=False), input_shape=(5,), n_outputs=1, drop_prob=None,
                      generator=gen())
    assert n_params(lin) == 5 and lin(torch.zeros(2, 5)).shape == (2, 1)
    for shape in ((8, 8), (28, 28)):
        cnn = build_model(model_cfg(arch="cnn", channels=[4, 6]), input_shape=shape, n_outputs=10, drop_prob=0.1,
                          generator=gen())
        assert cnn(torch.zeros(3, *shape)).shape == (3, 10)
        assert dropout_module_names(cnn) == ["drop0", "drop1"]
        assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in cnn.modules())
    with pytest.raises(ConfigError, match=r"^\[model\] arch: 'cnn' needs image inputs \(height, width\); got input shape \(40,\)$"):
        build_model(model_cfg(arch="cnn"), input_shape=(40,), n_outputs=2, drop_prob=None, generator=gen())
    with pytest.raises(ConfigError, match=r"^\[model\] channels: 3 conv blocks halve the \(4, 4\) input below 1x1"):
        build_model(model_cfg(arch="cnn", channels=[2, 2, 2]), input_shape=(4, 4), n_outputs=2, drop_prob=None,
                    generator=gen())


def test_init_is_reproducible_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    a = build_model(model_cfg(), input_shape=(6,), n_outputs=3, drop_prob=None, generator=gen(1))
    b = build_model(model_cfg(), input_shape=(6,), n_outputs=3, drop_prob=None, generator=gen(1))
    c = build_model(model_cfg(), input_shape=(6,), n_outputs=3, drop_prob=None, generator=gen(2))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
        bound = 1 / (6 if na == "fc0.weight" or na == "fc0.bias" else 50) ** 0.5
        assert pa.abs().max() <= bound
    d = build_model(model_cfg(), input_shape=(6,), n_outputs=3, drop_prob=None, generator=gen(1),
                    dtype=torch.float64)
    assert d.fc0.weight.dtype == torch.float64
