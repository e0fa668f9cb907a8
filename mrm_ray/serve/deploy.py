"""Deploy the ensemble from a Serve config file (the one `serve run` takes) as a Ray job.

`serve run` / `serve deploy` read the same file directly; this path exists for clusters
reached with `ray job submit`, and for `--ensemble` to point the app at an ensemble.yaml.
The app outlives the job: Serve applications are detached.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mrm_ray.config import ConfigError, EnsembleMember, ServeTarget, load


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
