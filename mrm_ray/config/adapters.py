"""The settings of the RL frameworks' adapters (rl/verl.py, rl/openrlhf_agent.py): where the reward ensemble is
and how its rewards are asked for.

veRL passes `reward_kwargs` from its own config (`+reward.custom_reward_function.reward_kwargs.url=...`;
a token from the environment through OmegaConf: `reward_kwargs.token='${oc.env:MRM_SERVE_TOKEN}'`).
OpenRLHF builds its agent executor with no arguments, so environment variables are the only way in:
`OpenRLHFAgentConfig.ENV` names them.
"""

from __future__ import annotations

import os
from typing import Literal

from mrm_ray.config.core import ConfigError, Positive, PositiveFloat, config_dataclass, validate
from mrm_ray.config.ensemble import METHODS, TOKEN_ENV, UncertaintyCoef


@config_dataclass
class VerlReward:
    """veRL's `reward_kwargs` for `compute_score` / `compute_score_async`."""

    url: str  # the ensemble's base URL, e.g. http://HOST:8000
    token: str | None = None  # bearer token
    reward: Literal["model", "hybrid"] = "hybrid"  # hybrid: 1 on a verified answer, else sigmoid(model reward)
    method: Literal[METHODS] | None = None  # the aggregation (e.g. uwo, min); None = the ensemble's
    uncertainty_coef: UncertaintyCoef | None = None  # uwo / lcb; None = the ensemble's
    timeout: PositiveFloat = 120.0  # seconds a call (and its retries on a shed request) may take
    chunk_items: Positive = 64  # items per request of the legacy batch call


@config_dataclass
class OpenRLHFAgentConfig:
    """The OpenRLHF agent executor's settings, read from the rollout workers' environment (`ENV`)."""

    url: str  # MRM_REWARD_URL: the ensemble's base URL
    token: str | None = None  # MRM_SERVE_TOKEN
    reward: Literal["model", "hybrid"] = "model"  # MRM_REWARD: hybrid uses the label as the reference answer
    method: Literal[METHODS] | None = None  # MRM_REWARD_METHOD: the aggregation (e.g. uwo); None = the ensemble's
    uncertainty_coef: UncertaintyCoef | None = None  # MRM_UNCERTAINTY_COEF
    group_size: Positive = 1  # MRM_GROUP_SIZE: rollouts of one prompt sent as one group (n_samples_per_prompt)
    group_wait_s: PositiveFloat = 60.0  # MRM_GROUP_WAIT_S: how long a group waits for its last response
    timeout_s: PositiveFloat = 180.0  # MRM_REWARD_TIMEOUT_S (OpenRLHF's own reward timeout)

    ENV = {"url": "MRM_REWARD_URL", "token": TOKEN_ENV, "reward": "MRM_REWARD", "method": "MRM_REWARD_METHOD",
           "uncertainty_coef": "MRM_UNCERTAINTY_COEF",
           "group_size": "MRM_GROUP_SIZE", "group_wait_s": "MRM_GROUP_WAIT_S", "timeout_s": "MRM_REWARD_TIMEOUT_S"}

    @classmethod
    def from_env(cls, **given) -> "OpenRLHFAgentConfig":
        """The settings `given` (not None), else from the environment; every problem named at once."""
        values = {key: os.environ[name] for key, name in cls.ENV.items() if name in os.environ}
        values.update({k: v for k, v in given.items() if v is not None})
        if "url" not in values:
            raise ConfigError("set MRM_REWARD_URL (the reward ensemble's base URL) in the rollout workers' "
                              "environment, e.g. ray job submit --runtime-env-json "
                              "'{\"env_vars\": {\"MRM_REWARD_URL\": \"http://HOST:8000\"}}'")
        return validate(cls, values, where="OpenRLHF agent")
