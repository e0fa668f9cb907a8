"""The GRPO job's configuration: policy, prompts, rollouts, the reward service, the update."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from mrm_ray.config.core import NonNegative, Positive, PositiveFloat, config_dataclass, config_file
from mrm_ray.config.ensemble import METHODS, TOKEN_ENV, UncertaintyCoef
from mrm_ray.config.tracking import TrackingConfig
from mrm_ray.references import TINY, anchored
from mrm_ray.storage import join

REWARD_MODES = ("model", "hybrid", "rule")
GOLD_REWARDS = ("rule",)  # what `reward.gold` measures with (rl/loop.py)


@config_dataclass
class PromptsConfig:
    """Prompts with images and (for hybrid / rule rewards) reference answers."""

    path: str | None = None  # JSONL/Parquet: prompt (text or chat messages), images, answer; veRL layout too
    synthetic: Positive = 96  # with no path: generated image questions (colour of a shape), answer included
    task: str = "colour"  # the synthetic prompts' task: colour | count | colour_text
    held_out: Positive = 16  # prompts kept aside for the reward curve
    seed: int = 0  # the synthetic prompts' and the split's seed


@config_dataclass
class RolloutConfig:
    """How responses are sampled: the rollout actors, the group of responses per prompt, the sampling settings."""

    workers: Positive = 2  # rollout actors, each a copy of the policy
    cpus_per_worker: NonNegative = 0.5  # CPUs each rollout actor holds
    gpus_per_worker: NonNegative = 0.0  # GPUs each rollout actor holds
    group_size: int = 8  # G responses per prompt
    prompts_per_step: Positive = 8  # prompts sampled per step
    max_new_tokens: Positive = 8  # a response's length limit
    temperature: PositiveFloat = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling; 1 = off
    eval_samples: Positive = 4  # responses per held-out prompt for the reward curve (sampled, fixed seed)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("rollout.group_size must be >= 2: GRPO's advantages compare responses within a group")


@config_dataclass
class RewardServiceConfig:
    """Where rewards come from: a running endpoint (`url`), or one this job deploys (`members`); which aggregate of
    the members is optimised; and what is measured beside it."""

    mode: str = "hybrid"  # model | hybrid (1 on a verified answer, else sigmoid of the model reward) | rule
    method: Literal[METHODS] | None = None  # the members' aggregate optimised (e.g. uwo, min); None = the app's
    uncertainty_coef: UncertaintyCoef | None = None  # uwo: mean - coef x variance, lcb: - coef x std; None = app's
    gold: Literal[GOLD_REWARDS] | None = None  # measured, never optimised: rule = the rule reward on the prompt's
    #                                            reference answer (a prompt with none is counted missing, not 0)
    max_disagreement: PositiveFloat | None = None  # rollouts whose members' std is above it get zero advantage
    url: str | None = None  # http://HOST:8000 (a `jobs/serve.py` deployment), or serve://APP: its handle, same cluster
    members: tuple[str, ...] = ()  # reward checkpoints to deploy when no url is given (tiny[:FAMILY][@SEED] too)
    serve_config: str = "tiny"  # the Serve settings used for `members`: a shipped name (mrm-ray configs) or a path
    keep_deployed: bool = False  # leave the members' app serving after the run (else it is deleted)
    token_env: str = TOKEN_ENV  # the environment variable holding the endpoint's bearer token
    timeout_s: PositiveFloat = 30.0  # one HTTP call
    chunk_items: Positive = 32  # items per call (several calls in flight)
    max_concurrency: Positive = 8  # reward requests in flight at once
    max_wait_s: NonNegative = 60.0  # how long a step waits for an unavailable service before the job stops

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward.mode must be one of {REWARD_MODES}, got {self.mode!r}")
        if self.max_disagreement is not None and self.mode == "rule":
            raise ValueError("reward.max_disagreement filters on the members' disagreement, and reward.mode=rule "
                             "optimises no member: use mode model or hybrid, or unset it")


@config_dataclass
class OptimConfig:
    """The learner's update: GRPO's clipped objective with a KL to the starting policy."""

    learning_rate: PositiveFloat = 1e-6  # the policy's learning rate
    weight_decay: float = 0.0  # AdamW's
    max_grad_norm: PositiveFloat = 1.0  # gradient clipping
    clip_eps: float = 0.2  # PPO's ratio clip
    kl_coef: float = 0.04  # beta of the KL to the starting policy
    minibatches: Positive = 2  # updates per step (the ratio departs from 1 after the first)
    scale_advantages: bool = True  # divide by the group's std (GRPO); false = Dr. GRPO's centring only


@config_dataclass
class GRPOConfig:
    name: str = "grpo-tiny"  # the run's name: its folder is {output_dir}/{name}; running it again resumes it
    output_dir: str = "~/mrm-ray-runs"  # a path or a URI (s3://bucket/runs)
    policy: str = TINY  # a checkpoint of a supported family (a generator), or tiny[:FAMILY][@SEED]
    dtype: str = "float32"  # rollout weights; bfloat16 on GPUs (the learner keeps float32 and autocasts)
    learner_cpus: float = 1.0  # CPUs the learner actor holds
    learner_gpus: float = 0.0  # GPUs the learner actor holds
    steps: Positive = 20  # GRPO steps (sample, reward, update)
    eval_every: Positive = 5  # steps between held-out reward evaluations
    checkpoint_every: Positive = 10  # steps between policy checkpoints
    seed: int = 0  # sampling and prompt order
    max_pixels: int | None = None  # the policy processor's image budget; None = its own
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardServiceConfig = field(default_factory=RewardServiceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow / W&B besides metrics.jsonl

    @property
    def location(self) -> str:
        """The run's folder (run_folder.py): {output_dir}/{name}, a path or a URI."""
        return join(self.output_dir, self.name)

    def anchored(self, base=None) -> "GRPOConfig":
        """Local paths made absolute (actors run elsewhere); the Serve config found by shipped name or path."""
        return dataclasses.replace(
            self, output_dir=anchored(self.output_dir), policy=anchored(self.policy),
            prompts=dataclasses.replace(self.prompts, path=anchored(self.prompts.path) if self.prompts.path else None),
            reward=dataclasses.replace(self.reward, members=tuple(anchored(m) for m in self.reward.members),
                                       serve_config=str(config_file("serve", self.reward.serve_config))),
            tracking=self.tracking.anchored())
