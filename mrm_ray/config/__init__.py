"""The one typed config system: every schema, one mechanism (config/core.py), one loader (`load`).

    core.py       schemas as checked dataclasses, `validate`, the error format, `load`
    shipped.py    the configs that ship in the package, by kind and name (configs/)
    run.py        a training run (RunConfig and its sections), the in-process trainer's schedule
    grpo.py       a GRPO job
    mixture.py    a preference-data mixture
    ensemble.py   an ensemble of reward models, a member's Serve deployment and its reloadable settings
    serve.py      the Serve application's arguments, limits, and the application a Serve file deploys
    commands.py   evaluation, labelling, ensemble fitting, data preparation, the memory plan
    adapters.py   the veRL and OpenRLHF adapters' settings

Every setting is declared once, with its type, default and comment; `load(Schema, name_or_path,
overrides, values=flags)` reads a shipped name or a file, then flags, then `a.b=value` overrides, and
every problem comes back at once as one `ConfigError` naming its dotted path (exit code 2).
"""

from mrm_ray.config.adapters import OpenRLHFAgentConfig, VerlReward
from mrm_ray.config.commands import DataCommandConfig, EvalConfig, FitConfig, LabelConfig, PlanConfig
from mrm_ray.config.core import (ConfigError, Fraction, NonNegative, Positive, PositiveFloat, config_dataclass,
                                 config_file, load, merged, parse_overrides, read_yaml, run_main, set_path, to_dict,
                                 validate)
from mrm_ray.config.ensemble import (CONSERVATIVE_METHODS, MAX_BATCH_TOKENS, METHODS, MODALITIES, UNCERTAINTY_COEF,
                                     EnsembleConfig, EnsembleMember, JudgeConfig, JudgeTemplate, MemberServing,
                                     MemberSettings, UncertaintyCoef)
from mrm_ray.config.grpo import GRPOConfig, OptimConfig, PromptsConfig, RewardServiceConfig, RolloutConfig
from mrm_ray.config.mixture import MixtureConfig, SourceConfig
from mrm_ray.config.run import (DataConfig, HeadConfig, LocalTrainConfig, LoraConfig, LossConfig, ModelConfig,
                                RunConfig, SyntheticConfig, TrainConfig)
from mrm_ray.config.serve import AppArgs, IngressServing, Limits, ServeTarget
from mrm_ray.config.tracking import MLflowTracking, TrackingConfig, WandbTracking

__all__ = ["AppArgs", "CONSERVATIVE_METHODS", "ConfigError", "DataCommandConfig", "DataConfig", "EnsembleConfig", "EnsembleMember",
           "EvalConfig", "FitConfig", "Fraction", "GRPOConfig", "HeadConfig", "IngressServing", "JudgeConfig", "JudgeTemplate", "LabelConfig", "Limits",
           "LocalTrainConfig", "LoraConfig", "LossConfig", "MAX_BATCH_TOKENS", "METHODS", "MLflowTracking", "MODALITIES",
           "MemberServing", "MemberSettings", "MixtureConfig", "ModelConfig", "NonNegative", "OpenRLHFAgentConfig",
           "OptimConfig", "PlanConfig", "Positive", "PositiveFloat", "PromptsConfig", "RewardServiceConfig",
           "RolloutConfig", "RunConfig", "ServeTarget", "SourceConfig", "SyntheticConfig", "TrackingConfig", "TrainConfig",
           "UNCERTAINTY_COEF", "UncertaintyCoef", "VerlReward", "WandbTracking", "config_dataclass", "config_file", "load", "load_grpo_config", "load_run_config", "merged",
           "parse_overrides", "read_yaml", "run_main", "set_path", "to_dict", "validate"]


def load_run_config(source: str | None = None, overrides=()) -> RunConfig:
    """A training run from a shipped preset's name or a YAML file, plus `a.b=value` overrides."""
    return load(RunConfig, source, overrides, kind="train")


def load_grpo_config(source: str | None = None, overrides=()) -> GRPOConfig:
    """A GRPO job from a shipped name or a YAML file, plus `a.b=value` overrides."""
    return load(GRPOConfig, source, overrides, kind="grpo")
