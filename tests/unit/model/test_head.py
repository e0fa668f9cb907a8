"""Reward head variants: depth, activation, width, dropout, seeded init, float32 output."""

import pytest
import torch
from torch import nn

from mrm_ray.config import HeadConfig
from mrm_ray.model.head import RewardHead


def _linears(head):
    return [m for m in head.mlp if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_depth_and_width(layers):
    head = RewardHead(32, HeadConfig(num_layers=layers, hidden_size=16))
    shapes = [tuple(m.weight.shape) for m in _linears(head)]
    expected = {1: [(1, 32)], 2: [(16, 32), (1, 16)], 3: [(16, 32), (16, 16), (1, 16)]}[layers]
    assert shapes == expected
    assert head(torch.randn(5, 32)).shape == (5,)


def test_default_is_two_layers_silu_backbone_width():
    head = RewardHead(24, HeadConfig())
    assert [tuple(m.weight.shape) for m in _linears(head)] == [(24, 24), (1, 24)]
    assert isinstance(head.mlp[1], nn.SiLU)


@pytest.mark.parametrize("activation,module", [("silu", nn.SiLU), ("tanh", nn.Tanh), ("relu", nn.ReLU),
                                               ("none", nn.Identity)])
def test_activation_is_applied(activation, module):
    torch.manual_seed(0)
    head = RewardHead(8, HeadConfig(activation=activation))
    assert isinstance(head.mlp[1], module)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    zero = torch.zeros(1, 8)
    # f(x) + f(y) - f(x + y) - f(0) vanishes only for an affine map, i.e. activation "none"
    affine_gap = (head(x) + head(y) - head(x + y) - head(zero)).abs().max()
    assert (affine_gap < 1e-5) == (activation == "none")


def test_dropout_only_in_training():
    head = RewardHead(16, HeadConfig(dropout=0.5))
    x = torch.randn(64, 16)
    head.eval()
    torch.testing.assert_close(head(x), head(x), atol=1e-7, rtol=0)  # no dropout noise (0.5 would show)
    head.train()
    torch.manual_seed(0)
    a = head(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, head(x))


def test_seeded_init_and_float32_output():
    a, b = RewardHead(16, HeadConfig(init_seed=3)), RewardHead(16, HeadConfig(init_seed=3))
    c = RewardHead(16, HeadConfig(init_seed=4))
    x = torch.randn(3, 16)
    wa, wb, wc = (list(h.state_dict().values()) for h in (a, b, c))
    assert all(torch.equal(u, v) for u, v in zip(wa, wb))  # the same seed, the same weights
    assert not any(torch.equal(u, v) for u, v in zip(wa, wc) if u.abs().sum() > 0)
    assert a.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.float32


@pytest.mark.parametrize("kwargs", [dict(num_layers=0), dict(activation="gelu"), dict(dropout=1.0),
                                    dict(hidden_size=0)])
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        HeadConfig(**kwargs)
