"""Submit a job to a Ray cluster's job server and stream its logs: `mrm-ray JOB --address URL`.

What the job needs travels with it: this package's own code (`py_modules`, so the cluster
runs exactly the version that validated the config) and a working directory holding the
validated config. The cluster's Python must have the dependencies (the cluster YAMLs
install them). Paths in the config are read on the cluster: use shared storage or
`s3://` URIs for anything a multi-node cluster must see.
"""

from __future__ import annotations

import asyncio
import shlex
import tempfile
import time
from pathlib import Path

FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def strip_address(argv: list[str]) -> list[str]:
    """argv without `--address URL` / `--address=URL`."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--address":
            skip = True
        elif not item.startswith("--address="):
            out.append(item)
    return out


def submit(address: str, job: str, argv: list[str], *, files: dict[str, str] | None = None) -> int:
    """Run `python -m mrm_ray JOB ARGV` on the cluster, following its logs; 0 when it SUCCEEDED."""
    from ray.job_submission import JobSubmissionClient

    import mrm_ray

    client = JobSubmissionClient(address)
    with tempfile.TemporaryDirectory(prefix="mrm-ray-job-") as work:
        for name, text in (files or {}).items():
            (Path(work) / name).write_text(text)
        entrypoint = shlex.join(["python", "-m", "mrm_ray", job, *argv])
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env={"working_dir": work, "py_modules": [str(Path(mrm_ray.__file__).parent)]})
    print(f"submitted {job} as {job_id} to {address}  (ray job logs --address {address} {job_id})", flush=True)
    try:
        asyncio.run(_stream(client, job_id))
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running (ray job stop --address {address} {job_id})")
        return 130
    status = _final_status(client, job_id)
    if status != "SUCCEEDED":
        reason = (client.get_job_info(job_id).message or "").splitlines()[:1]  # its logs were streamed above
        print(f"job {job_id} {status}: {''.join(reason)}".rstrip())
        return 1
    return 0


async def _stream(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


def _final_status(client, job_id: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id))
    while not any(status.endswith(s) for s in FINAL) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(client.get_job_status(job_id))
    return status.rpartition(".")[2]
