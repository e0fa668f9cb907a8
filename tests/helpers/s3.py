"""A local S3-compatible server (moto's) on 127.0.0.1, one per test session.

It starts before any Ray cluster, and its endpoint and (fake) credentials go into this
process's environment, which `ray start` passes on: Ray Train workers, Serve replicas and
Ray Data tasks reach it the way a real cluster's nodes reach a bucket, through
`AWS_ENDPOINT_URL` (pyarrow reads it, as boto3 does).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

_server: "S3Server | None" = None


class S3Server:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError("moto_server did not start within 60 s")

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def bucket(self) -> str:
        """A new empty bucket; returns `s3://NAME`."""
        import boto3

        name = f"test-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def s3_server() -> S3Server:
    """The session's server, started on first use; its environment is set in this process."""
    global _server
    if _server is None:
        _server = S3Server()
        os.environ.update(_server.env())
    return _server


def stop_s3_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
