"""The GRPO job's configuration: policy, prompts, rollouts, the reward service, the update.

Plain frozen dataclasses read from YAML plus `a.b=value` overrides, as the training job's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mrm_ray.config import TINY_MODEL, from_dict, parse_overrides, set_path

REWARD_MODES = ("model", "hybrid", "rule")


@dataclass(frozen=True, kw_only=True)
class PromptsConfig:
    """Prompts with images and (for hybrid / rule rewards) reference answers."""

    path: str | None = None  # JSONL/Parquet: prompt (text or chat messages), images, answer; veRL layout too
    synthetic: int = 96  # with no path: generated image questions (colour of a shape), answer included
    task: str = "colour"
    held_out: int = 16  # prompts kept aside for the reward curve
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    workers: int = 2
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 0.0
    group_size: int = 8  # G responses per prompt
    prompts_per_step: int = 8
    max_new_tokens: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    eval_samples: int = 4  # responses per held-out prompt for the reward curve (sampled, fixed seed)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("rollout.group_size must be >= 2: GRPO's advantages compare responses within a group")


@dataclass(frozen=True, kw_only=True)
class RewardServiceConfig:
    """Where rewards come from: a running endpoint (`url`), or one this job deploys (`members`)."""

    mode: str = "hybrid"  # model | hybrid (1 on a verified answer, else sigmoid of the model reward) | rule
    url: str | None = None  # e.g. http://127.0.0.1:8000 (a `jobs/serve.py` deployment)
    members: tuple[str, ...] = ()  # reward checkpoints to deploy when no url is given (tiny:SEED allowed)
    serve_config: str = "jobs/configs/serve_tiny.yaml"  # the Serve settings used for `members`
    keep_deployed: bool = False  # leave the members' app serving after the run (else it is deleted)
    token_env: str = "MRM_SERVE_TOKEN"
    timeout_s: float = 30.0  # one HTTP call
    chunk_items: int = 32  # items per call (several calls in flight)
    max_concurrency: int = 8
    max_wait_s: float = 60.0  # how long a step waits for an unavailable service before the job stops

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward.mode must be one of {REWARD_MODES}, got {self.mode!r}")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.04
    minibatches: int = 2  # updates per step (the ratio departs from 1 after the first)
    scale_advantages: bool = True  # divide by the group's std (GRPO); false = Dr. GRPO's centring only


@dataclass(frozen=True, kw_only=True)
class GRPOConfig:
    name: str = "grpo-tiny"
    output_dir: str = "~/mrm-ray-runs"
    policy: str = TINY_MODEL  # a Qwen2.5-VL checkpoint dir; `tiny` = the tiny random one
    dtype: str = "float32"  # rollout weights; bfloat16 on GPUs (the learner keeps float32 and autocasts)
    learner_cpus: float = 1.0
    learner_gpus: float = 0.0
    steps: int = 20
    eval_every: int = 5
    checkpoint_every: int = 10
    seed: int = 0
    max_pixels: int | None = None
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardServiceConfig = field(default_factory=RewardServiceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


_NESTED = {"prompts": PromptsConfig, "rollout": RolloutConfig, "reward": RewardServiceConfig, "optim": OptimConfig}


def build_grpo_config(data: dict | None) -> GRPOConfig:
    data = dict(data or {})
    for key, cls in _NESTED.items():
        if isinstance(data.get(key), dict):
            sub = dict(data[key])
            if cls is RewardServiceConfig and "members" in sub:
                sub["members"] = tuple(sub["members"] or ())
            data[key] = from_dict(cls, sub)
    return from_dict(GRPOConfig, data)


def load_grpo_config(path: str | None, overrides: list[str] = ()) -> GRPOConfig:
    """GRPOConfig from YAML plus overrides; local paths made absolute (actors run elsewhere)."""
    import yaml

    data = yaml.safe_load(open(path)) if path else {}
    for key, value in parse_overrides(list(overrides)).items():
        set_path(data, key, value)
    cfg = build_grpo_config(data)

    def absolute(p: str) -> str:
        return str(Path(p).expanduser().resolve())

    members = tuple(m if m.startswith("tiny:") else absolute(m) for m in cfg.reward.members)
    serve_config = Path(cfg.reward.serve_config).expanduser()
    if not serve_config.is_absolute() and not serve_config.is_file():  # shipped configs, from any directory
        serve_config = Path(__file__).resolve().parents[2] / serve_config
    return dataclasses.replace(
        cfg, output_dir=absolute(cfg.output_dir),
        policy=cfg.policy if cfg.policy == TINY_MODEL else absolute(cfg.policy),
        prompts=dataclasses.replace(cfg.prompts, path=absolute(cfg.prompts.path) if cfg.prompts.path else None),
        reward=dataclasses.replace(cfg.reward, members=members, serve_config=str(serve_config.resolve())))
