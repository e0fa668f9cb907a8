"""Connect to Ray: the cluster a job was submitted to, or a fresh local one on loopback."""

from __future__ import annotations

import os


def connect(*, num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """`ray.init` once: the running cluster when RAY_ADDRESS names one (as under `ray job
    submit`), else a new local instance (never a stale `ray start` session left on disk)."""
    if not os.environ.get("RAY_ADDRESS"):
        # Read by Ray at import: a local instance then binds and advertises 127.0.0.1 only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=log_to_driver)
        return
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
