"""Connect to Ray: the cluster a job was submitted to, or a local one on loopback."""

from __future__ import annotations

import os


def connect(*, num_cpus: int | None = None) -> None:
    """`ray.init` once: the running cluster when there is one (RAY_ADDRESS, `ray job submit`),
    else a local instance whose every listener stays on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
