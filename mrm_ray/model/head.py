"""The MLP reward head that replaces Qwen2.5-VL's LM head.

BaseReward found a 2-layer MLP with SiLU better than a single linear layer; the depth,
activation, width and dropout are settings so the ablation can be rerun.
"""

from __future__ import annotations

import torch
from torch import nn

from mrm_ray.config import HeadConfig

_ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "none": nn.Identity}


class RewardHead(nn.Module):
    """hidden (N, H) -> reward (N,) as float32."""

    def __init__(self, input_size: int, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_size or input_size
        layers: list[nn.Module] = []
        size = input_size
        for _ in range(config.num_layers - 1):
            layers += [nn.Linear(size, width), _ACTIVATIONS[config.activation](), nn.Dropout(config.dropout)]
            size = width
        layers.append(nn.Linear(size, 1))
        self.mlp = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Seeded init, independent of the global RNG, so a fresh head is reproducible."""
        gen = torch.Generator().manual_seed(self.config.init_seed)
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            fan_in = layer.in_features
            # The last layer starts small (as TRL/OpenRLHF value heads do) so initial
            # rewards are near zero and the first updates are not dominated by the head.
            std = 1.0 / (fan_in + 1) ** 0.5 if i == len(linears) - 1 else fan_in**-0.5
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
            layer.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.mlp[0].weight
        return self.mlp(hidden.to(weight.dtype)).squeeze(-1).float()
