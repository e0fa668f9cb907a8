"""Deploy the ensemble from a Serve config file (the one `serve run` takes) as a Ray job.

`serve run` / `serve deploy` read the same file directly; this path exists for clusters
reached with `ray job submit`, and for `--ensemble` to point the app at an ensemble.yaml.
The app outlives the job: Serve applications are detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrm_ray.storage import is_uri


@dataclass(frozen=True)
class ServeTarget:
    name: str
    route_prefix: str
    args: dict[str, Any]
    http_options: dict[str, Any]
    logging_config: dict[str, Any] | None = None
    runtime_env: dict[str, Any] | None = None  # the application's: env_vars only (e.g. the auth token)


def load_serve_config(path: str | Path, *, ensemble: str | None = None, name: str | None = None,
                      route_prefix: str | None = None) -> ServeTarget:
    """The first application of a Serve config (a shipped name or a path), its `args` validated as the app
    will read them; `ensemble` replaces its inline members and method."""
    from ray.serve.schema import ServeDeploySchema

    from mrm_ray import presets
    from mrm_ray.config import ConfigError, read_config, validate
    from mrm_ray.serve.app import AppArgs

    path = presets.config_file("serve", str(path))
    raw = read_config(path)
    schema = validate(ServeDeploySchema, raw, where=str(path))  # the same checks `serve deploy` makes
    app = schema.applications[0]
    if set(app.runtime_env or {}) - {"env_vars"}:  # env_vars reach the replicas; other fields need `serve deploy`
        raise ConfigError(f"{path}: this job applies only `runtime_env.env_vars` of the application, not "
                          f"{sorted(set(app.runtime_env) - {'env_vars'})}; `serve deploy` the file instead")
    args = dict(app.args or {})
    if ensemble:
        args.pop("members", None)
        args.pop("method", None)  # the ensemble file's method was fitted with its weights
        args["ensemble"] = ensemble if is_uri(ensemble) else str(Path(ensemble).resolve())
    app_args = validate(AppArgs, args, where=f"{path}: applications[0].args")
    try:  # members, their checkpoints, the method: refused here, not in a replica
        app_args.ensemble_config().check_references()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    http = raw.get("http_options") or {}
    return ServeTarget(name=name or app.name, route_prefix=route_prefix or app.route_prefix or "/", args=args,
                       http_options={"host": http.get("host", "127.0.0.1"), "port": http.get("port", 8000)},
                       logging_config=raw["applications"][0].get("logging_config"),
                       runtime_env=dict(app.runtime_env) if app.runtime_env else None)


def member_names(members: list[str]) -> list[str]:
    """Serve-safe, distinct names for members given as checkpoint references (paths, URIs, `tiny:SEED`)."""
    import re

    names = [re.sub(r"[^a-z0-9-]", "-", Path(m).name.lower().replace(":", "-"))[:40] or f"m{i}"
             for i, m in enumerate(members)]
    return [f"{n}-{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def deploy_members(members: list[str], serve_config: str | Path, *, name: str) -> str:
    """These reward checkpoints (each checked first: ValueError names a bad one) as an ensemble app `name`
    at `/name`, with the rest of a Serve config's settings (method, batching, HTTP); its URL."""
    import dataclasses

    from mrm_ray.model.reward_checkpoint import reference_family

    families = [reference_family(member) for member in members]
    target = load_serve_config(serve_config, name=name, route_prefix=f"/{name}")
    # a text-only member scores the text-only items; image items go to the vision-language members
    args = {**target.args, "members": [
        {"name": n, "path": m, **({} if f is None or f.vision else {"modalities": ["text"]})}
        for n, m, f in zip(member_names(members), members, families)]}
    return deploy(dataclasses.replace(target, args=args))


def deploy(target: ServeTarget) -> str:
    """Start Serve if needed, run the app until healthy, and return its URL."""
    from ray import serve

    from mrm_ray.serve.app import application

    serve.start(http_options=target.http_options)
    serve.run(application(target.args, runtime_env=target.runtime_env), name=target.name,
              route_prefix=target.route_prefix, blocking=False, logging_config=target.logging_config)
    host, port = target.http_options["host"], target.http_options["port"]
    return f"http://{host}:{port}{target.route_prefix.rstrip('/')}"


def wait_forever(url: str) -> None:
    """Keep a driver-owned local Ray instance (and so the app) alive until Ctrl-C."""
    import time

    print(f"local Ray instance: serving at {url} until Ctrl-C (submit with `ray job submit` to detach)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
