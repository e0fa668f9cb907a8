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
    return from_dict(HeadConfig, data)


IMAGE_MODE_POLICIES = ("reject", "convert")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """How pairs are checked, sized and encoded on their way to the trainer."""

    min_pixels: int | None = None  # None = the processor's own budget
    max_pixels: int | None = None
    max_length: int = 4096  # tokens of the packed row: prompt + chosen + rejected
    max_prompt_tokens: int = 3072  # prompts are never cut; longer ones are quarantined
    max_response_tokens: int = 1024  # each response is cut from its end to this
    min_response_tokens: int = 16  # a response is never cut below this to make a pair fit
    min_image_side: int = 8  # smaller images (1x1 ...) are quarantined
    max_image_pixels: int = 40_000_000  # larger images are quarantined before decoding
    max_aspect_ratio: float = 200.0  # Qwen2.5-VL's resize refuses more extreme images
    image_modes: str = "reject"  # reject | convert: CMYK, palette, 16-bit, alpha images
    max_bad_fraction: float = 0.01  # stop when more records than this are bad
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        if self.image_modes not in IMAGE_MODE_POLICIES:
            raise ValueError(f"data.image_modes must be one of {IMAGE_MODE_POLICIES}, got {self.image_modes!r}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.max_prompt_tokens + 2 * self.min_response_tokens > self.max_length:
            raise ValueError("data.max_length must leave room for a full prompt and two minimal responses "
                             f"({self.max_prompt_tokens} + 2 x {self.min_response_tokens} > {self.max_length})")
        if self.min_response_tokens < 2:
            raise ValueError("data.min_response_tokens must be >= 2 (one text token and <|im_end|>)")


def from_dict(cls, data: dict | None):
    """Build a config dataclass from a plain dict, refusing unknown keys by name."""
    data = dict(data or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings {sorted(unknown)}; known: {sorted(known)}")
    return cls(**data)


def parse_overrides(items: list[str]) -> dict:
    """["max_length=512", "image_modes=convert"] -> {"max_length": 512, "image_modes": "convert"}.

    Values are read as YAML scalars, so numbers, booleans and null come out typed.
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out
