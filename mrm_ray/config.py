"""The one typed config system: frozen, keyword-only dataclasses, validated with pydantic.

Every config (runs, GRPO, mixtures, ensembles; Serve's `AppArgs` is a pydantic model of its
own) is a dataclass whose fields carry their types and ranges. `validate(cls, data)` builds
one from plain data (YAML, `a.b=value` overrides, a Ray worker's dict): values are checked
and coerced (`"1e-6"` is a float), unknown keys are refused with the dotted path and the
closest valid key, and every problem comes back at once in one `ConfigError` (entry points
exit with code 2). Ray workers receive plain dicts and rebuild configs with `validate`, so a
config never depends on objects captured from a driver process.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as _pydantic_dataclass

Positive = Annotated[int, Ge(1)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, le=1)]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every problem by its dotted path."""


def run_main(main) -> int:
    """Call an entry point's `main()`; a ConfigError prints one clear error and returns exit code 2."""
    import sys

    try:
        return main() or 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def config_dataclass(cls):
    """A frozen, keyword-only dataclass whose fields pydantic checks on construction; unknown keys are errors."""
    return _pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))(cls)


@lru_cache(maxsize=None)
def _adapter(cls):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def validate(cls, data: dict | None, *, where: str = ""):
    """`cls` built from plain data, every field checked; raises one ConfigError listing all problems.

    `where` prefixes the dotted paths in messages (e.g. "reward" for a sub-config).
    """
    from pydantic import ValidationError

    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of settings, got {data!r}")
    try:
        return _adapter(cls).validate_python(dict(data or {}))
    except ValidationError as exc:
        problems = [_describe(cls, error, where) for error in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _is_config(tp) -> bool:
    from pydantic import BaseModel

    return dataclasses.is_dataclass(tp) or (isinstance(tp, type) and issubclass(tp, BaseModel))


def _field_types(cls) -> dict[str, Any]:
    """name -> type of a config dataclass's or pydantic model's fields ({} for anything else)."""
    if dataclasses.is_dataclass(cls):
        return typing.get_type_hints(cls)
    if _is_config(cls):
        return {name: f.annotation for name, f in cls.model_fields.items()}
    return {}


def _unwrap(tp):
    """The config class inside `X | None`, `tuple[X, ...]`, `list[X]`, `Annotated[X, ...]`, if any."""
    if _is_config(tp):
        return tp
    for arg in typing.get_args(tp) or ():
        inner = _unwrap(arg)
        if inner is not None:
            return inner
    return None


def _describe(cls, error: dict, where: str) -> str:
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    shown_loc = [str(part) if not isinstance(part, int) else f"[{part}]" for part in error["loc"]]
    path = ".".join(filter(None, [where, *shown_loc])).replace(".[", "[")
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        owner = cls
        for part in loc[:-1]:
            owner = _unwrap(_field_types(owner).get(part)) or owner
        known = list(_field_types(owner))
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known here: {', '.join(known)}"
        return f"{path}: unknown setting{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # the dataclass's own check, which names its fields
        return message if not path or message.startswith(path.rpartition(".")[2]) else f"{path}: {message}"
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, (dict, list, tuple)) else ""
    return f"{path or cls.__name__}: {message}{shown}"

ACTIVATIONS = ("silu", "tanh", "relu", "none")
TINY_MODEL = "tiny"  # model.path value: build (once) and use the tiny random checkpoint; tiny:FAMILY for a family's


def is_tiny(path: str) -> bool:
    """`tiny` (the tiny random Qwen2.5-VL) or `tiny:FAMILY` (mrm-ray tiny --family)."""
    return path == TINY_MODEL or path.startswith(TINY_MODEL + ":")
PAIR_FORWARDS = ("packed", "two_sequence")


@config_dataclass
class HeadConfig:
    """The MLP that replaces the LM head and maps the last real token to a scalar reward."""

    num_layers: Positive = 2  # 1 = a single linear layer
    activation: str = "silu"  # silu | tanh | relu | none
    hidden_size: int | None = None  # width of the hidden layers; None = the backbone's
    dropout: float = 0.0
    init_seed: int = 0  # a fresh head is initialised from this seed, so loads are reproducible

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"head.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise ValueError(f"head.hidden_size must be positive, got {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout must be in [0, 1), got {self.dropout}")


@config_dataclass
class LossConfig:
    """Bradley-Terry loss options; BaseReward's final recipe uses neither regulariser."""

    use_margin: bool = True  # subtract a pair's `margin` when the data carries one
    centering_coef: float = 0.0  # lambda in lambda * mean((r_c + r_r)^2)
    length_normalize: bool = False  # r / log(len + 1) before the loss

    def __post_init__(self) -> None:
        if self.centering_coef < 0:
            raise ValueError(f"loss.centering_coef must be >= 0, got {self.centering_coef}")


@config_dataclass
class ModelConfig:
    """Which checkpoint to load and how to run its pair forward."""

    path: str = ""  # a Hugging Face checkpoint directory or its s3:// URI; `tiny` = the tiny random one
    head: HeadConfig = field(default_factory=HeadConfig)
    pair_forward: str = "packed"  # packed | two_sequence (the reference)
    # kernel for packed groups: auto (flash varlen on CUDA in bf16/fp16, padded SDPA elsewhere) | varlen | sdpa |
    # dense (the 4D-mask reference, quadratic in the row)
    packed_attention: str = "auto"
    attn_implementation: str = "sdpa"  # sdpa | eager: what the two-sequence and dense references run
    vision_attention: str = "batched"  # batched (one SDPA call per vision layer) | windows (transformers' loop)
    random_init: bool = False  # build path/config.json with random weights (sizing runs; see model/published.py)

    def __post_init__(self) -> None:
        if self.pair_forward not in PAIR_FORWARDS:
            raise ValueError(f"model.pair_forward must be one of {PAIR_FORWARDS}, got {self.pair_forward!r}")
        if self.vision_attention not in ("windows", "batched"):
            raise ValueError(f"model.vision_attention must be windows or batched, got {self.vision_attention!r}")
        if self.packed_attention not in ("auto", "varlen", "sdpa", "dense"):
            raise ValueError(f"model.packed_attention must be auto, varlen, sdpa or dense, got "
                             f"{self.packed_attention!r}")


def to_dict(config: Any) -> dict:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


IMAGE_MODE_POLICIES = ("reject", "convert")


@config_dataclass
class DataConfig:
    """How pairs are checked, sized and encoded on their way to the trainer."""

    min_pixels: int | None = None  # None = the processor's own budget
    max_pixels: int | None = None
    max_length: Positive = 4096  # tokens of the packed row: prompt + chosen + rejected
    max_prompt_tokens: Positive = 3072  # prompts are never cut; longer ones are quarantined
    max_response_tokens: Positive = 1024  # each response is cut from its end to this
    min_response_tokens: int = 16  # a response is never cut below this to make a pair fit
    min_image_side: Positive = 8  # smaller images (1x1 ...) are quarantined
    max_image_pixels: Positive = 40_000_000  # larger images are quarantined before decoding
    max_aspect_ratio: PositiveFloat = 200.0  # Qwen2.5-VL's resize refuses more extreme images
    # convert (alpha over white, as the processors themselves do) | reject: CMYK, palette, 16-bit, alpha images;
    # charts and screenshots in real mixtures are full of them
    image_modes: str = "convert"
    max_bad_fraction: float = 0.01  # stop when more records than this are bad
    shuffle_seed: int = 0  # the order the train parts are read in, and their rows
    rows_per_part: Positive = 256  # records per read task (JSONL lines; Parquet rounds to whole row groups)
    shuffle_buffer: int = 64  # encoded rows each trainer shuffles locally (seeded per epoch); 0: none
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


def parse_overrides(items: list[str]) -> dict:
    """["max_length=512", "image_modes=convert"] -> {"max_length": 512, "image_modes": "convert"}.

    Values are read as YAML scalars, so numbers, booleans and null come out typed.
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.learning_rate=1e-6)")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "2e-3" as text; people mean a number
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


@config_dataclass
class LoraConfig:
    """LoRA adapters on the language model (peft); the reward head is always fully trained."""

    rank: Positive = 16
    alpha: Positive = 32
    dropout: Fraction = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@config_dataclass
class TrainConfig:
    """Ray Train scaling and the DeepSpeed optimisation recipe (BaseReward's defaults)."""

    num_workers: Positive = 2
    use_gpu: bool = False
    cpus_per_worker: NonNegative = 1.0
    resources_per_worker: dict[str, NonNegative] = field(default_factory=dict)  # e.g. {"accelerator_type:H100": 0.001}
    zero_stage: int = 2  # 0 | 2 | 3
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only
    micro_batch_size: Positive = 1  # pairs per worker per forward (without a token budget)
    # With a budget, a worker's pairs of one optimizer step (micro_batch_size x accumulation) are re-cut into
    # micro-batches by tokens: as few as hold them (the same count on every rank), balanced, each packed into
    # rows of at most this many tokens. Loss, metrics and evaluation stay per pair. None = fixed pair counts.
    max_tokens_per_micro_batch: Positive | None = None
    global_batch_size: Positive = 128  # pairs per optimizer step (accumulation fills the gap)
    learning_rate: PositiveFloat = 3e-6
    head_learning_rate: PositiveFloat | None = None  # None = learning_rate
    weight_decay: NonNegative = 0.0
    warmup_ratio: Fraction = 0.03
    min_lr_ratio: Fraction = 0.0
    epochs: PositiveFloat = 1.0
    max_steps: Positive | None = None  # optimizer steps; None = epochs
    max_grad_norm: PositiveFloat = 1.0
    # auto: DeepSpeed's fused Adam on GPU (CPU Adam when offloading), torch's AdamW on a CPU-only run (nothing
    # to JIT-compile) | deepspeed | torch
    optimizer_impl: str = "auto"
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    lora: LoraConfig | None = None
    eval_every: Positive = 50  # optimizer steps between held-out evaluations (and checkpoints)
    keep_checkpoints: Positive = 2  # best K by held-out accuracy
    max_failures: Annotated[int, Ge(0)] = 0  # workers replaced this many times before the run fails
    stop_at_step: Positive | None = None  # end this job after that step with a checkpoint (as a preemption would);
    #                                  the same run without it resumes there and ends as an unbroken run would
    log_every: Positive = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("train.offload_params needs zero_stage 3")
        if self.optimizer_impl not in ("auto", "deepspeed", "torch"):
            raise ValueError(f"train.optimizer_impl must be auto, deepspeed or torch, got {self.optimizer_impl!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.global_batch_size % (self.micro_batch_size * self.num_workers):
            raise ValueError(f"train.global_batch_size {self.global_batch_size} must be a multiple of "
                             f"micro_batch_size x num_workers = {self.micro_batch_size * self.num_workers}")

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.num_workers)


@config_dataclass
class SyntheticConfig:
    """Generated image-grounded pairs: the data when no mixture is given (nothing to download)."""

    pairs: Positive = 512
    task: str = "colour"  # colour | count (the answer only in the image) | colour_text (only in the prompt text)
    seed: int = 0
    image_size: Positive = 112  # pixels a side (the tiny processor's largest image is 112 x 112)


@config_dataclass
class RunConfig:
    """Everything one training run needs; saved with every checkpoint it makes."""

    name: str = "tiny"
    output_dir: str = "runs"  # run directory: {output_dir}/{name}; a path or a URI (s3://bucket/runs)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mixture: str | None = None  # a mixture YAML or shipped name; None = synthetic pairs
    mixture_paths: dict = field(default_factory=dict)  # source name -> path overrides
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    held_out_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.1  # for synthetic data (a mixture sets its own)
    preprocess_workers: Positive = 1  # Ray Data actors checking and encoding pairs
    preprocess_cpus: PositiveFloat = 1.0  # CPUs each of them holds
    cache_encoded: bool = False  # encode once and keep it in the object store (small sets only)


def set_path(data: dict, dotted: str, value) -> None:
    """data["a"]["b"] = value for "a.b"."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is a setting, not a section")
        node = node[key]
    node[leaf] = value


def read_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict:
    """A YAML file's mapping (or {}) with `a.b=value` overrides applied."""
    import yaml

    data = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read the config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    for key, value in parse_overrides(list(overrides)).items():
        set_path(data, key, value)
    return data


def load_run_config(path: str | None, overrides: list[str] = ()) -> RunConfig:
    """RunConfig from a preset's name or a YAML file, plus `a.b=c` overrides, validated (ConfigError) before
    anything runs."""
    from mrm_ray import presets

    run = validate(RunConfig, read_config(path and presets.config_file("train", path), overrides))
    from mrm_ray.storage import is_uri

    # Ray workers and `ray job submit` drivers run in other directories: make local paths absolute
    def absolute(path: str) -> str:
        return path if is_uri(path) else str(Path(path).expanduser().resolve())

    output_dir = absolute(run.output_dir)
    model_path = run.model.path if is_tiny(run.model.path) else absolute(run.model.path)
    return dataclasses.replace(run, output_dir=output_dir, model=dataclasses.replace(run.model, path=model_path))
