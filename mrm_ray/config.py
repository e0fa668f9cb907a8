"""Typed, frozen, keyword-only configuration for the model and its loss.

Ray workers receive plain dicts and rebuild these with `from_dict`, so a config never
depends on objects captured from a driver process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("silu", "tanh", "relu", "none")
PAIR_FORWARDS = ("packed", "two_sequence")


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """The MLP that replaces the LM head and maps the last real token to a scalar reward."""

    num_layers: int = 2  # 1 = a single linear layer
    activation: str = "silu"  # silu | tanh | relu | none
    hidden_size: int | None = None  # width of the hidden layers; None = the backbone's
    dropout: float = 0.0
    init_seed: int = 0  # a fresh head is initialised from this seed, so loads are reproducible

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"head.num_layers must be >= 1, got {self.num_layers}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"head.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise ValueError(f"head.hidden_size must be positive, got {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Bradley-Terry loss options; BaseReward's final recipe uses neither regulariser."""

    use_margin: bool = True  # subtract a pair's `margin` when the data carries one
    centering_coef: float = 0.0  # lambda in lambda * mean((r_c + r_r)^2)
    length_normalize: bool = False  # r / log(len + 1) before the loss

    def __post_init__(self) -> None:
        if self.centering_coef < 0:
            raise ValueError(f"loss.centering_coef must be >= 0, got {self.centering_coef}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which checkpoint to load and how to run its pair forward."""

    path: str = ""
    head: HeadConfig = field(default_factory=HeadConfig)
    pair_forward: str = "packed"  # packed | two_sequence (the reference)
    attn_implementation: str = "sdpa"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.pair_forward not in PAIR_FORWARDS:
            raise ValueError(f"model.pair_forward must be one of {PAIR_FORWARDS}, got {self.pair_forward!r}")


def to_dict(config: Any) -> dict:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def head_from_dict(data: dict) -> HeadConfig:
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown head settings {sorted(unknown)}; known: {sorted(known)}")
    return HeadConfig(**data)
