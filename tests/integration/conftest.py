"""One real local Ray cluster for the integration tests, on loopback only."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # address="local": a fresh instance, never a stale `ray start` session recorded in /tmp/ray
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_head():
    """A `ray start --head` (job server, dashboard, 4 logical CPUs) shared by the Serve and evaluation tests."""
    from helpers.ray_head import RayHead

    head = RayHead(num_cpus=4)
    yield head
    head.stop()


def pytest_collection_modifyitems(session, config, items):
    """Tests on the shared head run last, so its idle cluster never slows the training jobs."""
    items.sort(key=lambda item: "shared_head" in getattr(item, "fixturenames", ()))
