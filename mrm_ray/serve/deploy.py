"""Deploy the ensemble from a Serve config file (the one `serve run` takes) as a Ray job.

`serve run` / `serve deploy` read the same file directly; this path exists for clusters
reached with `ray job submit`, and for `--ensemble` to point the app at an ensemble.yaml.
The app outlives the job: Serve applications are detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ServeTarget:
    name: str
    route_prefix: str
    args: dict[str, Any]
    http_options: dict[str, Any]
    logging_config: dict[str, Any] | None = None


def load_serve_config(path: str | Path, *, ensemble: str | None = None, name: str | None = None,
                      route_prefix: str | None = None) -> ServeTarget:
    """The first application of a Serve config; `ensemble` replaces its inline members and method."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(Path(path).read_text())
    schema = ServeDeploySchema.model_validate(raw)  # the same checks `serve deploy` makes
    app = schema.applications[0]
    if app.runtime_env:  # e.g. the auth token's env var: dropping it silently would serve without auth
        raise ValueError(f"{path}: this job cannot apply the application's runtime_env; `serve deploy` the file, "
                         "or pass it to the job (`ray job submit --runtime-env-json '{\"env_vars\": {...}}'`) "
                         "and remove it from the config")
    args = dict(app.args or {})
    if ensemble:
        args.pop("members", None)
        args.pop("method", None)  # the ensemble file's method was fitted with its weights
        args["ensemble"] = str(Path(ensemble).resolve())
    http = raw.get("http_options") or {}
    return ServeTarget(name=name or app.name, route_prefix=route_prefix or app.route_prefix or "/", args=args,
                       http_options={"host": http.get("host", "127.0.0.1"), "port": http.get("port", 8000)},
                       logging_config=raw["applications"][0].get("logging_config"))


def deploy(target: ServeTarget) -> str:
    """Start Serve if needed, run the app until healthy, and return its URL."""
    from ray import serve

    from mrm_ray.serve.app import build_app

    serve.start(http_options=target.http_options)
    serve.run(build_app(target.args), name=target.name, route_prefix=target.route_prefix, blocking=False,
              logging_config=target.logging_config)
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
