"""What one training run is: the model and its head, the loss, the data checks, Ray Train and DeepSpeed, and the
in-process trainer's schedule. `RunConfig` is saved with every checkpoint and export the run makes."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Annotated, Literal

from annotated_types import Ge, Interval

from mrm_ray.config.core import VIDEO_ROUTES, Fraction, NonNegative, Positive, PositiveFloat, config_dataclass
from mrm_ray.config.tracking import TrackingConfig
from mrm_ray.references import anchored
from mrm_ray.storage import join

ACTIVATIONS = ("silu", "tanh", "relu", "none")
PAIR_FORWARDS = ("packed", "two_sequence")


@config_dataclass
class HeadConfig:
    """The MLP that replaces the LM head and maps the last real token to a scalar reward."""

    num_layers: Positive = 2  # 1 = a single linear layer
    activation: str = "silu"  # silu | tanh | relu | none
    hidden_size: int | None = None  # width of the hidden layers; None = the backbone's
    dropout: float = 0.0  # before each hidden layer's activation; 0 = none
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

    path: str = ""  # a checkpoint directory, its s3:// URI, or tiny[:FAMILY][@SEED] (a tiny random one; references.py)
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


IMAGE_MODE_POLICIES = ("reject", "convert")


@config_dataclass
class DataConfig:
    """How pairs are checked, sized and encoded on their way to the trainer."""

    min_pixels: int | None = None  # None = the processor's own budget
    # the processor's image budget in pixels; None = the processor's own (Qwen2.5-VL: 12845056)
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
    # how videos reach the model, one route for the run: video (the family's video processor; needs torchvision),
    # frames (each frame an image, in order), auto (video where the processor has one, else frames)
    video_route: Literal[VIDEO_ROUTES] = "auto"
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


@config_dataclass
class LoraConfig:
    """LoRA adapters on the language model (peft); the reward head is always fully trained."""

    rank: Positive = 16  # LoRA rank
    alpha: Positive = 32  # LoRA scaling (alpha / rank)
    dropout: Fraction = 0.05  # LoRA dropout
    # module names adapted, inside the family's language model
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@config_dataclass
class TrainConfig:
    """Ray Train scaling and the DeepSpeed optimisation recipe (BaseReward's defaults)."""

    num_workers: Positive = 2  # Ray Train workers (one per GPU)
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: NonNegative = 1.0  # CPUs each worker holds
    resources_per_worker: dict[str, NonNegative] = field(default_factory=dict)  # e.g. {"accelerator_type:H100": 0.001}
    zero_stage: int = 2  # 0 | 2 | 3
    offload_optimizer: bool = False  # ZeRO optimizer state in CPU memory
    offload_params: bool = False  # ZeRO-3 only
    micro_batch_size: Positive = 1  # pairs per worker per forward (without a token budget)
    # With a budget, a worker's pairs of one optimizer step (micro_batch_size x accumulation) are re-cut into
    # micro-batches by tokens: as few as hold them (the same count on every rank), balanced, each packed into
    # rows of at most this many tokens. Loss, metrics and evaluation stay per pair. None = fixed pair counts.
    max_tokens_per_micro_batch: Positive | None = None
    global_batch_size: Positive = 128  # pairs per optimizer step (accumulation fills the gap)
    learning_rate: PositiveFloat = 3e-6  # peak learning rate of the backbone (BaseReward: 3e-6)
    head_learning_rate: PositiveFloat | None = None  # None = learning_rate
    weight_decay: NonNegative = 0.0  # AdamW's
    warmup_ratio: Fraction = 0.03  # fraction of the steps warming up linearly
    min_lr_ratio: Fraction = 0.0  # the cosine schedule's floor, as a fraction of the peak
    epochs: PositiveFloat = 1.0  # passes over the train split (when max_steps is None)
    max_steps: Positive | None = None  # optimizer steps; None = epochs
    max_grad_norm: PositiveFloat = 1.0  # gradient clipping
    # auto: DeepSpeed's fused Adam on GPU (CPU Adam when offloading), torch's AdamW on a CPU-only run (nothing
    # to JIT-compile) | deepspeed | torch
    optimizer_impl: str = "auto"
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    gradient_checkpointing: bool = False  # recompute activations in backward (memory for time)
    freeze_vision: bool = False  # keep the vision tower's weights fixed
    lora: LoraConfig | None = None
    eval_every: Positive = 50  # optimizer steps between held-out evaluations (and checkpoints)
    keep_checkpoints: Positive = 2  # best K by held-out accuracy
    max_failures: Annotated[int, Ge(0)] = 0  # workers replaced this many times before the run fails
    stop_at_step: Positive | None = None  # end this job after that step with a checkpoint (as a preemption would);
    #                                  the same run without it resumes there and ends as an unbroken run would
    log_every: Positive = 10
    seed: int = 0  # model init, data order, dropout

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

    pairs: Positive = 512  # generated pairs (train + held out)
    task: str = "colour"  # colour | count (the answer only in the image) | colour_text (only in the prompt text)
    seed: int = 0  # the generator's seed
    image_size: Positive = 112  # pixels a side (the tiny processor's largest image is 112 x 112)


@config_dataclass
class RunConfig:
    """Everything one training run needs; saved with every checkpoint it makes."""

    name: str = "tiny"  # the run's name: its folder is {output_dir}/{name}; running it again resumes it
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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow / W&B besides metrics.jsonl

    @property
    def location(self) -> str:
        """The run's folder (run_folder.py): {output_dir}/{name}, a path or a URI."""
        return join(self.output_dir, self.name)

    def anchored(self, base=None) -> "RunConfig":
        """Local paths made absolute (Ray workers and submitted jobs run in other directories); model paths and
        output folders of a run file are relative to where the command runs, as on a command line."""
        return dataclasses.replace(self, output_dir=anchored(self.output_dir),
                                   model=dataclasses.replace(self.model, path=anchored(self.model.path)),
                                   tracking=self.tracking.anchored())


@config_dataclass
class LocalTrainConfig:
    """The in-process trainer's schedule (train/local.py: the learning tests, the CPU demo, benchmarks)."""

    steps: Positive = 600
    batch_size: Positive = 16
    lr: PositiveFloat = 3e-4
    weight_decay: NonNegative = 0.0
    warmup_steps: Annotated[int, Ge(0)] = 20
    max_grad_norm: PositiveFloat = 1.0
    seed: int = 0
    packed: bool = True
    loss: LossConfig = field(default_factory=LossConfig)
