"""Typed, frozen, keyword-only configuration for the model and its loss.

Ray workers receive plain dicts and rebuild these with `from_dict`, so a config never
depends on objects captured from a driver process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATIONS = ("silu", "tanh", "relu", "none")
TINY_MODEL = "tiny"  # model.path value: build (once) and use the tiny random checkpoint
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
    attn_implementation: str = "sdpa"  # sdpa | eager: packed pairs need a 4D mask, which flash-attn lacks
    vision_attention: str = "batched"  # batched (one SDPA call per vision layer) | windows (transformers' loop)
    random_init: bool = False  # build path/config.json with random weights (sizing runs; see model/published.py)

    def __post_init__(self) -> None:
        if self.pair_forward not in PAIR_FORWARDS:
            raise ValueError(f"model.pair_forward must be one of {PAIR_FORWARDS}, got {self.pair_forward!r}")
        if self.vision_attention not in ("windows", "batched"):
            raise ValueError(f"model.vision_attention must be windows or batched, got {self.vision_attention!r}")


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
    # the same rows in the same order on every rank on every run (Ray Data's preserve_order), so that a resumed
    # run trains on what an unbroken one would; false lets blocks go out as they finish (many actors: faster)
    preserve_order: bool = True

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
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "2e-3" as text; people mean a number
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """LoRA adapters on the language model (peft); the reward head is always fully trained."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Ray Train scaling and the DeepSpeed optimisation recipe (BaseReward's defaults)."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    resources_per_worker: dict = field(default_factory=dict)  # e.g. {"accelerator_type:H100": 0.001}
    zero_stage: int = 2  # 0 | 2 | 3
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only
    micro_batch_size: int = 1  # pairs per worker per forward
    global_batch_size: int = 128  # pairs per optimizer step (accumulation fills the gap)
    learning_rate: float = 3e-6
    head_learning_rate: float | None = None  # None = learning_rate
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; None = epochs
    max_grad_norm: float = 1.0
    # auto: DeepSpeed's fused Adam on GPU (CPU Adam when offloading), torch's AdamW on a CPU-only run (nothing
    # to JIT-compile) | deepspeed | torch
    optimizer_impl: str = "auto"
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    lora: LoraConfig | None = None
    eval_every: int = 50  # optimizer steps between held-out evaluations (and checkpoints)
    keep_checkpoints: int = 2  # best K by held-out accuracy
    max_failures: int = 0  # workers replaced this many times before the run fails
    stop_at_step: int | None = None  # end this job after that step with a checkpoint (as a preemption would);
    #                                  the same run without it resumes there and ends as an unbroken run would
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("train.offload_params needs zero_stage 3")
        if self.optimizer_impl not in ("auto", "deepspeed", "torch"):
            raise ValueError(f"train.optimizer_impl must be auto, deepspeed or torch, got {self.optimizer_impl!r}")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ValueError(f"train.stop_at_step must be >= 1, got {self.stop_at_step}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.global_batch_size % (self.micro_batch_size * self.num_workers):
            raise ValueError(f"train.global_batch_size {self.global_batch_size} must be a multiple of "
                             f"micro_batch_size x num_workers = {self.micro_batch_size * self.num_workers}")

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.num_workers)


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Generated image-grounded pairs: the data when no mixture is given (nothing to download)."""

    pairs: int = 512
    task: str = "colour"
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one training run needs; saved with every checkpoint it makes."""

    name: str = "tiny"
    output_dir: str = "runs"  # run directory: {output_dir}/{name}
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixture: str | None = None  # a mixture YAML or shipped name; None = synthetic pairs
    mixture_paths: dict = field(default_factory=dict)  # source name -> path overrides
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    held_out_fraction: float = 0.1  # for synthetic data (a mixture sets its own)
    preprocess_workers: int = 1  # Ray Data actors checking and encoding pairs
    preprocess_cpus: float = 1.0  # CPUs each of them holds
    cache_encoded: bool = False  # encode once and keep it in the object store (small sets only)


_NESTED = {
    (RunConfig, "model"): ModelConfig, (RunConfig, "loss"): LossConfig, (RunConfig, "data"): DataConfig,
    (RunConfig, "train"): TrainConfig, (RunConfig, "synthetic"): SyntheticConfig, (ModelConfig, "head"): HeadConfig,
    (TrainConfig, "lora"): LoraConfig,
}


def build(cls, data: dict | None):
    """A nested config from a plain dict (YAML, or a Ray worker's config), refusing unknown keys."""
    data = dict(data or {})
    for (owner, name), sub in _NESTED.items():
        if owner is cls and isinstance(data.get(name), dict):
            data[name] = build(sub, data[name])
    if cls is LoraConfig and "target_modules" in data:
        data["target_modules"] = tuple(data["target_modules"])
    return from_dict(cls, data)


def set_path(data: dict, dotted: str, value) -> None:
    """data["a"]["b"] = value for "a.b"."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
        node = node[key]
    node[leaf] = value


def load_run_config(path: str | None, overrides: list[str] = ()) -> RunConfig:
    """RunConfig from a YAML file plus `a.b=c` overrides (values read as YAML scalars)."""
    import yaml

    data = yaml.safe_load(open(path)) if path else {}
    for key, value in parse_overrides(list(overrides)).items():
        set_path(data, key, value)
    run = build(RunConfig, data)
    # Ray workers and `ray job submit` drivers run in other directories: make paths absolute
    output_dir = str(Path(run.output_dir).expanduser().resolve())
    model_path = run.model.path
    if model_path != TINY_MODEL:
        model_path = str(Path(model_path).expanduser().resolve())
    return dataclasses.replace(run, output_dir=output_dir, model=dataclasses.replace(run.model, path=model_path))
