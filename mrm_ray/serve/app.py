"""The serving application: one `RewardMember` deployment per ensemble member behind the FastAPI `Ingress`.

`build_app(args) -> Application` is the import path for `serve run` / `serve deploy`
(`mrm_ray.serve.app:build_app`); its `args` are config/serve.py's `AppArgs`, validated once there.
Each member's deployment takes its `serving` settings (the member's own, else the application's) and
loads the checkpoint its `user_config` names (config/ensemble.py's `MemberSettings`), which a new
`serve deploy` changes in place.
"""

from __future__ import annotations

from ray import serve
from ray.serve.config import BackpressureConfig

from mrm_ray.config import AppArgs, EnsembleMember, to_dict, validate
from mrm_ray.serve.ingress import Ingress
from mrm_ray.serve.member import RewardMember


def deployment_name(member: str) -> str:
    return f"member-{member}"


def _num_gpus(value: float | str) -> float:
    if value != "auto":
        return float(value)
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def build_app(args: dict) -> serve.Application:
    """The Serve application for `args` (what `serve run`/`serve deploy` call with the config's `args`)."""
    return application(validate(AppArgs, args or {}, where="args"))


def application(args: AppArgs, *, runtime_env: dict | None = None,
                retired: tuple[EnsembleMember, ...] = ()) -> serve.Application:
    """The application for validated `args`; `runtime_env` (the application's, when `mrm-ray serve` deploys it,
    as `serve deploy` would apply it) goes to every replica. `retired` members stay deployed without being
    asked (the first step of removing them: the previous ingress may still call them while it drains)."""
    env = {"runtime_env": runtime_env} if runtime_env else {}
    ensemble = args.ensemble_config()
    handles, spec_members = {}, []
    shed = BackpressureConfig(status_code=503, retry_after_s=args.ingress.retry_after_s)
    routed = {member.name for member in ensemble.members}
    for member in (*ensemble.members, *(m for m in retired if m.name not in routed)):
        s = args.member_serving(member)
        scaling = {"num_replicas": s.num_replicas} if s.num_replicas else {"autoscaling_config": s.autoscaling_config}
        user_config = to_dict(member.settings(s))
        handles[member.name] = RewardMember.options(
            name=deployment_name(member.name), max_ongoing_requests=s.max_ongoing_requests,
            max_queued_requests=s.max_queued_requests, backpressure_config=shed, user_config=user_config,
            max_surge_percent=s.max_surge_percent,
            ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": _num_gpus(s.num_gpus), "resources": s.resources,
                               **env},
            **scaling,
        ).bind(member.name, max_batch_size=s.max_batch_size, defaults=user_config)
        if member.name in routed:
            spec_members.append({"name": member.name, "weight": member.weight, "modalities": list(member.modalities),
                                 "max_batch_size": s.max_batch_size})
    spec = {"method": ensemble.method, "uncertainty_coef": ensemble.uncertainty_coef, "members": spec_members, "limits": to_dict(args.limits),
            "auth_token": args.auth_token.get_secret_value() if args.auth_token else None,
            "auth_token_env": args.auth_token_env, "retry_after_s": args.ingress.retry_after_s}
    ongoing, queued = args.ingress_admission(ensemble.members)
    return Ingress.options(num_replicas=args.ingress.num_replicas, max_ongoing_requests=ongoing,
                           max_queued_requests=queued, backpressure_config=shed,
                           max_surge_percent=args.ingress.max_surge_percent,
                           ray_actor_options={"num_cpus": args.ingress.num_cpus, **env}).bind(spec, handles)
