"""One real Ray cluster for the integration tests, on loopback only, and never two at once.

`ray_head` is a `ray start --head` (job server, dashboard, 4 logical CPUs) started on first
use and kept for the session: `ray job submit` tests submit to it, in-process tests
(`ray_cluster`) connect this pytest process to it as a driver. A test that needs a cluster
of its own (the autoscaler's) asks for `own_cluster`, which stops the shared one first; the
next test that needs the shared one starts it again. Modules leave nothing running on it
(Serve apps are shut down at the end of their module), so they pass alone and in any order.
The local S3 server (`s3`, helpers/s3.py) starts before the cluster, so its processes reach it.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class Clusters:
    """At most one Ray cluster at a time: the shared head, or a test's own."""

    def __init__(self) -> None:
        self.head = None

    def shared(self):
        from helpers.ray_head import RayHead
        from helpers.s3 import s3_server

        if self.head is None:
            s3_server()  # first: its endpoint goes into the cluster's environment
            self.head = RayHead(num_cpus=4)
        return self.head

    def connect(self):
        """This process as a driver on the shared head."""
        import ray

        head = self.shared()
        if not ray.is_initialized():
            ray.init(address=head.gcs_address, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def stop_shared(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.head is not None:
            self.head.stop()
            self.head = None


@pytest.fixture(scope="session")
def clusters():
    from helpers.s3 import stop_s3_server

    clusters = Clusters()
    yield clusters
    clusters.stop_shared()
    stop_s3_server()


@pytest.fixture(scope="module")
def ray_head(clusters):
    """The shared `ray start --head`, for `ray job submit`, `serve deploy` and the state API."""
    return clusters.shared()


@pytest.fixture(scope="module")
def ray_cluster(clusters):
    """`ray` with this process connected to the shared head as a driver."""
    return clusters.connect()


@pytest.fixture(scope="module")
def own_cluster(clusters):
    """For a test that starts its own cluster: the shared one is stopped first."""
    clusters.stop_shared()

