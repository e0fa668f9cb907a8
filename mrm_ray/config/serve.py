"""The Serve application's settings: `args:` of a Serve config file (what `serve run` / `serve deploy` take),
and the application `mrm-ray serve` deploys from such a file.

    applications:
      - name: reward
        import_path: mrm_ray.serve.app:build_app
        args:                      # AppArgs
          method: mean               # or z_mean, *_weighted, min, uwo, lcb (a request may ask for another)
          uncertainty_coef: 0.5      # uwo / lcb
          members: [{name: a, path: tiny:0}, {name: b, path: /runs/b/reward_model}]   # or ensemble: FILE
          serving: {max_batch_size: 16, num_cpus: 0.5}     # every member's deployment (MemberServing)
          ingress: {num_cpus: 0.5}                         # the HTTP ingress
          limits: {max_items: 64}                          # per request; past them, a 413 naming the field
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

from pydantic import SecretStr

from mrm_ray.config.core import ConfigError, NonNegative, Positive, config_dataclass, load, validate
from mrm_ray.config.ensemble import (METHODS, TOKEN_ENV, EnsembleConfig, EnsembleMember, MemberServing,
                                     SurgePercent, UncertaintyCoef)
from mrm_ray.references import anchored


@config_dataclass
class IngressServing:
    """The HTTP ingress. Load shedding: past `max_ongoing_requests` + `max_queued_requests` HTTP requests
    (per replica), and past a member's `max_ongoing_requests` x replicas + `max_queued_requests` calls,
    requests answer 503 with `Retry-After: retry_after_s` at once instead of queuing without bound.

    Admission is sized to the members (`None`, the default: the members' batch capacity, the largest
    `max_batch_size` x replicas of any member, `autoscaling_config.max_replicas` when it autoscales): the
    ingress works on about one batch round of the members at once, and Serve's proxy holds the next round
    and sheds the rest before the ingress spends any work on them, so an accepted request does not wait
    behind the ones that will be shed (benchmarks/bench_overload.py: 500 concurrent one-item clients)."""

    num_replicas: Positive = 1  # ingress replicas (each admits its own limits)
    max_ongoing_requests: Positive | None = None  # HTTP requests one ingress replica works on at once
    max_queued_requests: Positive | None = None  # HTTP requests waiting at the proxy for an ingress replica
    retry_after_s: NonNegative = 1.0  # the Retry-After of a shed request's 503
    num_cpus: NonNegative = 1.0  # CPUs each ingress replica holds
    max_surge_percent: SurgePercent = 100  # on an update, the new ingress starts before the old one stops


@config_dataclass
class Limits:
    """Per-request limits; anything over them is a 413 naming the field."""

    max_items: Positive = 64  # items per /v1/score or /get_reward request
    max_responses: Positive = 16  # responses of one group item (`responses`)
    max_pairs: Positive = 32  # pairs per /v1/compare request
    max_images_per_item: Positive = 8  # images per item or pair (a video's frames count apart)
    max_videos_per_item: Positive = 2  # videos per item or pair
    max_video_frames: Positive = 16  # frames of one video (each member gives it to its model by its video_route)
    max_image_bytes: Positive = 10 * 2**20  # decoded size of one image
    max_image_pixels: Positive = 4096 * 4096  # refused from the header, before decoding
    max_text_chars: Positive = 32_768  # per prompt, response or reference
    max_request_bytes: Positive = 64 * 2**20  # the whole request body


@config_dataclass
class AppArgs:
    """`args:` of the Serve config: the ensemble (a file or inline members), how members and the ingress are
    deployed, the limits, auth."""

    ensemble: str | None = None  # ensemble.yaml from `mrm-ray ensemble fit` (a path or s3:// URI)
    members: tuple[EnsembleMember, ...] = ()  # inline members (instead of `ensemble`)
    method: Literal[METHODS] | None = None  # overrides the ensemble file's (a request may ask for another)
    uncertainty_coef: UncertaintyCoef | None = None  # uwo / lcb; overrides the ensemble file's
    serving: MemberServing = field(default_factory=MemberServing)  # every member's, unless it has its own
    ingress: IngressServing = field(default_factory=IngressServing)
    limits: Limits = field(default_factory=Limits)
    auth_token: SecretStr | None = None  # bearer token; prefer auth_token_env
    auth_token_env: str = TOKEN_ENV  # the ingress reads the token from this variable when set

    def __post_init__(self) -> None:
        if self.ensemble and self.members:
            raise ValueError("give either `ensemble` (a file) or inline `members`, not both")

    def ensemble_config(self) -> EnsembleConfig:
        """The members and method: the ensemble file's (its method unless `method` is set), or the inline ones."""
        if self.ensemble:
            config = load(EnsembleConfig, self.ensemble)
        elif self.members:
            config = EnsembleConfig(members=self.members)
        else:
            raise ValueError("no members: set `ensemble: path/to/ensemble.yaml` or list `members`")
        coef = config.uncertainty_coef if self.uncertainty_coef is None else self.uncertainty_coef
        return EnsembleConfig(members=config.members, method=self.method or config.method, uncertainty_coef=coef,
                              fitted_on=config.fitted_on)

    def member_serving(self, member: EnsembleMember) -> MemberServing:
        return member.serving or self.serving

    def ingress_admission(self, members: tuple[EnsembleMember, ...]) -> tuple[int, int]:
        """The ingress's (max_ongoing_requests, max_queued_requests): as set, or `members`' batch capacity."""
        capacity = 1
        for member in members:
            s = self.member_serving(member)
            replicas = s.num_replicas or int(s.autoscaling_config.get("max_replicas", 1))
            capacity = max(capacity, s.max_batch_size * replicas)
        return self.ingress.max_ongoing_requests or capacity, self.ingress.max_queued_requests or capacity


@config_dataclass
class ServeTarget:
    """The first application of a Serve config file, as `mrm-ray serve` (and a GRPO job's reward) deploys it."""

    name: str
    route_prefix: str = "/"
    args: AppArgs = field(default_factory=AppArgs)
    http_options: dict[str, Any] = field(default_factory=lambda: {"host": "127.0.0.1", "port": 8000})
    logging_config: dict[str, Any] | None = None
    runtime_env: dict[str, Any] | None = None  # the application's: env_vars only (e.g. the auth token)

    @classmethod
    def from_file(cls, raw: dict, *, file, base, ensemble: str | None = None, name: str | None = None,
                  route_prefix: str | None = None) -> dict:
        """The file checked as `serve deploy` checks it (Serve's own schema), its first application's `args`
        as the app reads them; `ensemble` replaces the inline members and method."""
        from ray.serve.schema import ServeDeploySchema

        schema = validate(ServeDeploySchema, raw, where=str(file))
        app = schema.applications[0]
        if set(app.runtime_env or {}) - {"env_vars"}:  # env_vars reach the replicas; other fields need `serve deploy`
            raise ConfigError(f"{file}: this job applies only `runtime_env.env_vars` of the application, not "
                              f"{sorted(set(app.runtime_env) - {'env_vars'})}; `serve deploy` the file instead")
        args = dict(app.args or {})
        if ensemble:
            args.pop("members", None)
            args.pop("method", None)  # the ensemble file's method was fitted with its weights
            args.pop("uncertainty_coef", None)
            args["ensemble"] = anchored(ensemble)
        http = raw.get("http_options") or {}
        return {"name": name or app.name, "route_prefix": route_prefix or app.route_prefix or "/",
                "args": validate(AppArgs, args, where=f"{file}: applications[0].args"),
                "http_options": {"host": http.get("host", "127.0.0.1"), "port": http.get("port", 8000)},
                "logging_config": raw["applications"][0].get("logging_config"),
                "runtime_env": dict(app.runtime_env) if app.runtime_env else None}
