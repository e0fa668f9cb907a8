"""Deploy the ensemble from a Serve config file (the one `serve run` takes) as a Ray job.

`serve run` / `serve deploy` read the same file directly; this path exists for clusters
reached with `ray job submit`, and for `--ensemble` to point the app at an ensemble.yaml.
The app outlives the job: Serve applications are detached.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from mrm_ray.config import ConfigError, EnsembleMember, ServeTarget, load, validate


def load_target(path: str | Path, *, ensemble: str | None = None, name: str | None = None,
                route_prefix: str | None = None) -> ServeTarget:
    """The first application of a Serve config (a shipped name or a path), checked as `serve deploy` checks it,
    its `args` as the app reads them, and every member a reward model it can route (model/checkpoints.py);
    `ensemble` replaces its inline members and method. ConfigError, before anything is deployed."""
    from mrm_ray.model import checkpoints

    target = load(ServeTarget, path, kind="serve", ensemble=ensemble, name=name, route_prefix=route_prefix)
    try:  # members, their checkpoints, the method: refused here, not in a replica
        checkpoints.check_members(target.args.ensemble_config().members)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return target


def member_names(members: list[str]) -> list[str]:
    """Serve-safe, distinct names for members given as references (paths, URIs, `tiny:...`)."""
    names = [re.sub(r"[^a-z0-9-]", "-", Path(m).name.lower().replace(":", "-").replace("@", "-"))[:40] or f"m{i}"
             for i, m in enumerate(members)]
    return [f"{n}-{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def deploy_members(members: list[str], serve_config: str | Path, *, name: str) -> str:
    """These reward models (each checked first: ValueError names a bad one) as an ensemble app `name` at
    `/name`, with the rest of a Serve config's settings (batching, HTTP); its URL. A text-only member scores
    the text-only items; image items go to the vision-language members."""
    from mrm_ray.model import checkpoints

    families = [checkpoints.reference_family(member) for member in members]
    target = load(ServeTarget, serve_config, kind="serve", name=name, route_prefix=f"/{name}")
    chosen = tuple(EnsembleMember(name=n, path=m, **({} if f is None or f.vision else {"modalities": ("text",)}))
                   for n, m, f in zip(member_names(members), members, families))
    checkpoints.check_members(chosen)
    args = dataclasses.replace(target.args, ensemble=None, members=chosen)
    return deploy(dataclasses.replace(target, args=args))


def deploy(target: ServeTarget, *, retired: tuple[EnsembleMember, ...] = ()) -> str:
    """Start Serve if needed, run the app until healthy, and return its URL."""
    from ray import serve

    from mrm_ray.serve.app import application

    serve.start(http_options=target.http_options)
    serve.run(application(target.args, runtime_env=target.runtime_env, retired=retired), name=target.name,
              route_prefix=target.route_prefix, blocking=False, logging_config=target.logging_config)
    host, port = target.http_options["host"], target.http_options["port"]
    return f"http://{host}:{port}{target.route_prefix.rstrip('/')}"


def update(target: ServeTarget, *, timeout_s: float = 900) -> dict[str, str]:
    """Apply `target` in place to the app of its name already running on this cluster (members added, removed,
    re-weighted or given new checkpoints, another method) while it keeps answering: every replica of the app
    rolls, each new one started before the old one stops (`max_surge_percent`). A removed member is taken
    down in a second step, once no ingress that still asks it is left. Returns when the app runs the new
    config and no old replica is left, with each member's checkpoint version now serving. ConfigError, with
    nothing changed, when no such app runs."""
    from ray import serve

    from mrm_ray.serve.handle_client import HandleRewardClient

    running = serve.status().applications
    if target.name not in running:
        raise ConfigError(f"--update: no application {target.name!r} is running on this cluster (running: "
                          f"{sorted(running) or 'none'}); drop --update to deploy it, or pass --name")
    client = HandleRewardClient(target.name, token=_token(target), max_wait_s=120)  # retried while it sheds
    kept = {member.name for member in target.args.ensemble_config().members}
    retired = tuple(validate(EnsembleMember, {
        "name": m["name"], "path": m["path"], "score_mean": m.get("score_mean"), "score_std": m.get("score_std"),
        "modalities": tuple(m["modalities"]), "kind": m.get("kind", "scalar"),
        **({"judge": m["judge"]} if m.get("kind") == "judge" else {})}, where=f"member {m['name']}")
                    for m in client.models()["members"] if m["name"] not in kept)
    deadline = time.monotonic() + timeout_s
    if retired:  # first the new ingress, which no longer asks them, while the old one drains
        deploy(target, retired=retired)
        _wait_settled(target.name, deadline)
    deploy(target)  # serve.run returns once the app is RUNNING on the new version (raises if it failed)
    _wait_settled(target.name, deadline)
    return {m["name"]: m.get("version") for m in client.models()["members"]}


def _wait_settled(app: str, deadline: float) -> None:
    """Until no replica of `app` is left but running ones of its current version (the old have drained)."""
    from ray import serve

    while True:
        status = serve.status().applications[app]
        states = {getattr(state, "value", state) for d in status.deployments.values()
                  for state, n in d.replica_states.items() if n}  # str enums: "RUNNING", "STOPPING", ...
        if status.status == "RUNNING" and states <= {"RUNNING"}:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"--update: {app} still {status.status} with replicas {sorted(states)}")
        time.sleep(0.5)


def _token(target: ServeTarget) -> str | None:
    """The bearer token the app checks (its own setting, its replicas' environment, or this process's)."""
    import os

    args = target.args
    if args.auth_token:
        return args.auth_token.get_secret_value()
    return (target.runtime_env or {}).get("env_vars", {}).get(args.auth_token_env) or os.environ.get(args.auth_token_env)


def wait_forever(url: str) -> None:
    """Keep a driver-owned local Ray instance (and so the app) alive until Ctrl-C."""
    print(f"local Ray instance: serving at {url} until Ctrl-C (submit with `ray job submit` to detach)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
