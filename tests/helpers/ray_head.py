"""A real Ray head (`ray start --head`) with the job server, on loopback, for `ray job submit` tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0",
            # Ray Train's controller polls its workers every 2 s by default: reports and the end of a
            # run reach the driver that much later; tiny runs here take about as long as one poll
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


class RayHead:
    """`ray start --head --block` in its own process group, so stopping it touches no other cluster."""

    def __init__(self, num_cpus: int = 2, *, autoscaling_config: dict | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port, self.dashboard_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"  # the node's Prometheus endpoint
        self.address = f"http://127.0.0.1:{self.dashboard_port}"  # the job server (dashboard)
        self.gcs_address = f"127.0.0.1:{self.port}"  # what a driver's ray.init connects to
        autoscaling, self._cleanup = [], None
        if autoscaling_config is not None:  # the fake provider's worker nodes join this head's GCS port
            config = {**autoscaling_config, "provider": {**autoscaling_config["provider"],
                                                         "gcs_address": f"127.0.0.1:{self.port}"}}
            fd, path = tempfile.mkstemp(prefix="autoscaling-", suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(config, f)
            autoscaling = [f"--autoscaling-config={path}"]
            self._cleanup = Path(path)
        self.env = {**ray_env(), **(env or {})}
        # every port explicit and free: another local Ray (the in-process test cluster) holds the defaults,
        # and a dashboard agent that cannot bind leaves the job server with "no available agent"
        ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                 f"--metrics-export-port={self.metrics_port}", f"--runtime-env-agent-port={_free_port()}"]
        self.process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
             f"--num-cpus={num_cpus}", "--disable-usage-stats", *ports, *autoscaling],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:  # ready when a trivial job runs end to end
            probe = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.address, "--", "true"],
                                   env=ray_env(), capture_output=True, text=True, timeout=120)
            if job_status(probe.stdout + probe.stderr) == "SUCCEEDED":
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError("the Ray head could not run a job within 180 s")

    def submit(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        """`ray job submit --working-dir <repo> -- python jobs/train.py ...`, waiting for the end."""
        return subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.address, "--working-dir",
                               str(REPO), "--", "python", *args], env=ray_env(), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def logs(self, job_id: str) -> str:
        """`ray job logs`: what the job printed."""
        out = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", self.address, job_id], env=ray_env(),
                             capture_output=True, text=True, timeout=120)
        return out.stdout

    def status(self, job_id: str) -> str:
        out = subprocess.run([str(BIN / "ray"), "job", "status", "--address", self.address, job_id], env=ray_env(),
                             capture_output=True, text=True, timeout=60)
        return out.stdout + out.stderr

    def alive_nodes(self) -> list[dict]:
        """This cluster's live nodes (Ray's state API), with their `resources_total`."""
        out = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", self.address, "--format", "json",
                              "-f", "state=ALIVE"], env=ray_env(), capture_output=True, text=True, timeout=60)
        try:
            return json.loads(out.stdout)
        except ValueError:
            return []

    def alive_actor_pids(self, class_name: str) -> list[int]:
        """PIDs of this cluster's live actors of a class (Ray's state API)."""
        out = subprocess.run([str(BIN / "ray"), "list", "actors", "--address", self.address, "--format", "json",
                              "-f", f"class_name={class_name}", "-f", "state=ALIVE"],
                             env=ray_env(), capture_output=True, text=True, timeout=60)
        try:
            return [int(a["pid"]) for a in json.loads(out.stdout)]
        except (ValueError, KeyError, TypeError):
            return []

    def serve_shutdown(self) -> None:
        """Take every Serve app (and Serve's HTTP proxy, whose port is fixed when it starts) down."""
        subprocess.run([str(BIN / "serve"), "shutdown", "--address", self.address, "-y"], env=ray_env(),
                       capture_output=True, timeout=120)

    def stop(self) -> None:
        if self._cleanup is not None:
            self._cleanup.unlink(missing_ok=True)
        # the raylet outlives SIGTERM for many seconds: a short grace, then SIGKILL, and wait until all are gone
        for sig, grace in ((signal.SIGTERM, 2), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.time() + grace
            while time.time() < deadline:  # until every process of the group has gone
                self.process.poll()  # reap `ray start` itself, or it lingers as a zombie of the group
                try:
                    os.killpg(self.process.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


def job_status(output: str) -> str:
    """SUCCEEDED / FAILED / STOPPED from `ray job submit` output (its exit code alone is not enough)."""
    for word in ("succeeded", "failed", "stopped"):
        if f"' {word}" in output:
            return word.upper()
    return "UNKNOWN"
