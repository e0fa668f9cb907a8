"""The GRPO job's configuration: policy, prompts, rollouts, the reward service, the update.

Typed config dataclasses read from YAML plus `a.b=value` overrides and validated, as the
training job's (mrm_ray.config).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path

from mrm_ray import presets
from mrm_ray.config import (TINY_MODEL, is_tiny, NonNegative, Positive, PositiveFloat, config_dataclass, read_config,
                            validate)
from mrm_ray.model.reward_checkpoint import tiny_seed
from mrm_ray.storage import is_uri

REWARD_MODES = ("model", "hybrid", "rule")


@config_dataclass
class PromptsConfig:
    """Prompts with images and (for hybrid / rule rewards) reference answers."""

    path: str | None = None  # JSONL/Parquet: prompt (text or chat messages), images, answer; veRL layout too
    synthetic: Positive = 96  # with no path: generated image questions (colour of a shape), answer included
    task: str = "colour"
    held_out: Positive = 16  # prompts kept aside for the reward curve
    seed: int = 0


@config_dataclass
class RolloutConfig:
    workers: Positive = 2
    cpus_per_worker: NonNegative = 0.5
    gpus_per_worker: NonNegative = 0.0
    group_size: int = 8  # G responses per prompt
    prompts_per_step: Positive = 8
    max_new_tokens: Positive = 8
    temperature: PositiveFloat = 1.0
    top_p: float = 1.0
    eval_samples: Positive = 4  # responses per held-out prompt for the reward curve (sampled, fixed seed)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("rollout.group_size must be >= 2: GRPO's advantages compare responses within a group")


@config_dataclass
class RewardServiceConfig:
    """Where rewards come from: a running endpoint (`url`), or one this job deploys (`members`)."""

    mode: str = "hybrid"  # model | hybrid (1 on a verified answer, else sigmoid of the model reward) | rule
    url: str | None = None  # e.g. http://127.0.0.1:8000 (a `jobs/serve.py` deployment)
    members: tuple[str, ...] = ()  # reward checkpoints to deploy when no url is given (tiny:SEED allowed)
    serve_config: str = "tiny"  # the Serve settings used for `members`: a shipped name (mrm-ray configs) or a path
    keep_deployed: bool = False  # leave the members' app serving after the run (else it is deleted)
    token_env: str = "MRM_SERVE_TOKEN"
    timeout_s: PositiveFloat = 30.0  # one HTTP call
    chunk_items: Positive = 32  # items per call (several calls in flight)
    max_concurrency: Positive = 8
    max_wait_s: NonNegative = 60.0  # how long a step waits for an unavailable service before the job stops

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward.mode must be one of {REWARD_MODES}, got {self.mode!r}")


@config_dataclass
class OptimConfig:
    learning_rate: PositiveFloat = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: PositiveFloat = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.04
    minibatches: Positive = 2  # updates per step (the ratio departs from 1 after the first)
    scale_advantages: bool = True  # divide by the group's std (GRPO); false = Dr. GRPO's centring only


@config_dataclass
class GRPOConfig:
    name: str = "grpo-tiny"
    output_dir: str = "~/mrm-ray-runs"
    policy: str = TINY_MODEL  # a Qwen2.5-VL checkpoint dir; `tiny` = the tiny random one
    dtype: str = "float32"  # rollout weights; bfloat16 on GPUs (the learner keeps float32 and autocasts)
    learner_cpus: float = 1.0
    learner_gpus: float = 0.0
    steps: Positive = 20
    eval_every: Positive = 5
    checkpoint_every: Positive = 10
    seed: int = 0
    max_pixels: int | None = None
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardServiceConfig = field(default_factory=RewardServiceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_grpo_config(path: str | None, overrides: list[str] = ()) -> GRPOConfig:
    """GRPOConfig from a shipped name or a YAML path plus overrides, validated; local paths made absolute (actors run elsewhere)."""
    cfg = validate(GRPOConfig, read_config(path and presets.config_file("grpo", path), overrides))

    def absolute(p: str) -> str:
        return str(Path(p).expanduser().resolve())

    members = tuple(m if tiny_seed(m) is not None or is_uri(m) else absolute(m) for m in cfg.reward.members)
    serve_config = presets.config_file("serve", cfg.reward.serve_config)
    return dataclasses.replace(
        cfg, output_dir=absolute(cfg.output_dir),
        policy=cfg.policy if is_tiny(cfg.policy) else absolute(cfg.policy),
        prompts=dataclasses.replace(cfg.prompts, path=absolute(cfg.prompts.path) if cfg.prompts.path else None),
        reward=dataclasses.replace(cfg.reward, members=members, serve_config=str(serve_config)))
