"""The one run folder, for a training run, a GRPO job and an evaluation alike.

    {location}/                 a local path or an object-store URI (s3://bucket/runs/NAME)
      run_config.json           the full resolved config that made the run (also beside every checkpoint,
                                export and report it writes)
      metrics.jsonl             one event per line: {"event", "step", "time", ...values}
      tensorboard/              the same numbers as TensorBoard scalars
      quarantine.jsonl          every record set aside, with its reason (data/quarantine.py's schema)
      summary.json              what the run produced, for a person or a script to read first
      logs/{process}.log        each process's full library output (the console keeps our progress lines)

Writers write under `local`; `push` uploads named entries when `location` is a URI (a no-op for a
local one), `pull` fetches an entry an earlier run left there (a resumed run appends to its metrics).
The local folder of a URI is a cache of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrm_ray import storage
from mrm_ray.atomic import atomic_file

RUN_CONFIG = "run_config.json"
METRICS_LOG = "metrics.jsonl"
SUMMARY = "summary.json"
TENSORBOARD = "tensorboard"
LOG_DIR = "logs"


class RunFolder:
    def __init__(self, location: str | os.PathLike) -> None:
        self.location = str(location)
        self.remote = storage.is_uri(self.location)
        if self.remote:
            self.local = storage.CACHE.parent / "runs" / hashlib.sha256(self.location.encode()).hexdigest()[:16]
        else:
            self.local = Path(self.location)
        self.local.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunFolder({self.location!r})"

    def uri(self, name: str) -> str:
        """Where entry `name` lives for readers: a URI, or the local path."""
        return storage.join(self.location, name) if self.remote else str(self.local / name)

    def exists(self, name: str) -> bool:
        return storage.exists(self.uri(name))

    def pull(self, name: str) -> None:
        """Fetch entry `name` (a file or a folder) that is in the bucket into the local folder."""
        if self.remote and self.exists(name):
            import pyarrow.fs

            fs, path = storage.filesystem(self.uri(name))
            pyarrow.fs.copy_files(path, str(self.local / name), source_filesystem=fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())

    def remove(self, name: str) -> None:
        """Delete entry `name` (a file or a folder), locally and in the bucket."""
        import shutil

        local = self.local / name
        shutil.rmtree(local, ignore_errors=True) if local.is_dir() else local.unlink(missing_ok=True)
        if self.remote and self.exists(name):
            fs, path = storage.filesystem(self.uri(name))
            import pyarrow.fs

            if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
                fs.delete_dir(path)
            else:
                fs.delete_file(path)

    def push(self, name: str, *, last: str | None = None, replace: bool = False) -> str:
        """Upload entry `name` (a file or a folder); returns where it now lives."""
        if self.remote and (self.local / name).exists():
            storage.upload(self.local / name, self.uri(name), last=last, replace=replace)
        return self.uri(name)

    def listing(self, folder: str) -> list[str]:
        """Names of the entries directly inside `folder` (in the bucket for a remote run, else locally)."""
        if not self.remote:
            where = self.local / folder
            return sorted(p.name for p in where.iterdir()) if where.is_dir() else []
        import pyarrow.fs

        fs, path = storage.filesystem(self.uri(folder))
        found = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        return sorted(f.base_name for f in found)

    def write_json(self, name: str, data: Any) -> str:
        """`name` written atomically as JSON and pushed; where it lives."""
        with atomic_file(self.local / name) as f:
            f.write(json.dumps(data, indent=2, default=str) + "\n")
        return self.push(name)

    def write_config(self, config: Any, folder: str | os.PathLike | None = None) -> Path:
        """The full resolved config (a config dataclass or its dict) as `run_config.json`, here or in `folder`
        (a checkpoint, an export, a report). Secrets (pydantic's SecretStr) are written as '**********'."""
        data = _plain(config)
        target = Path(folder) if folder is not None else self.local
        with atomic_file(target / RUN_CONFIG) as f:
            f.write(json.dumps(data, indent=2, default=str) + "\n")
        if folder is None:
            self.push(RUN_CONFIG)
        return target / RUN_CONFIG

    def route_logs(self, process: str) -> Path:
        """This process's library output into `logs/{process}.log` (warnings still reach the console)."""
        from mrm_ray.logs import route_logs

        path = self.local / LOG_DIR / f"{process}.log"
        route_logs(path)
        return path

    def metrics(self, *, enabled: bool = True, tracking=None, name: str = "", params: Mapping | None = None
                ) -> "MetricsLog":
        """The run's metrics log; `tracking` (config/tracking.py's, when it has a tracker) also sends its numbers
        to MLflow / W&B runs named `name`, with `params` (the resolved config) as their parameters."""
        trackers = None
        if enabled and tracking is not None and tracking.enabled:
            from mrm_ray.tracking import Trackers

            trackers = Trackers(tracking, name=name, params=params, folder=self)
        return MetricsLog(self, enabled=enabled, trackers=trackers)


def _plain(config: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return {k: _plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    return str(config) if type(config).__name__ == "SecretStr" else config


class MetricsLog:
    """A run's `metrics.jsonl` and TensorBoard scalars, written together (only where `enabled`: rank 0).

    `event(kind, step, values, scalars=PREFIX)` appends one line and, with a prefix, adds every numeric
    value as the scalar `PREFIX/name` (`name` itself for the prefix ""); `flush()` makes both durable and
    uploads them. A resumed run
    appends to the file an earlier run left (fetched from the bucket for a remote run). With `trackers`
    (tracking.py), every scalar goes to the tracked runs as well, under the same name."""

    def __init__(self, folder: RunFolder, *, enabled: bool = True, trackers=None) -> None:
        self.folder, self.enabled, self.trackers = folder, enabled, trackers
        self.writer = self.file = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            local = folder.local / METRICS_LOG
            if folder.remote and not local.is_file():
                folder.pull(METRICS_LOG)
            self.writer = SummaryWriter(str(folder.local / TENSORBOARD))
            self.file = open(local, "a", encoding="utf-8")

    def event(self, kind: str, step: int, values: Mapping[str, Any], *, scalars: str | None = None) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"event": kind, "step": step, "time": time.time(), **values}, default=str) + "\n")
        self.file.flush()
        if scalars is not None:
            numbers = {f"{scalars}/{key}" if scalars else key: value for key, value in values.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value}
            for name, value in numbers.items():
                self.writer.add_scalar(name, value, step)
            if self.trackers is not None:
                self.trackers.log(numbers, step)

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.enabled:
            self.writer.add_scalar(name, value, step)
            if self.trackers is not None:
                self.trackers.log({name: value}, step)

    def artifact(self, path: str | os.PathLike, *, kind: str) -> None:
        """A file or folder (the exported model, the report) as the tracked runs' artifact, where tracked."""
        if self.enabled and self.trackers is not None:
            self.trackers.artifact(path, kind=kind)

    def flush(self) -> None:
        if self.enabled:
            self.writer.flush()
            self._upload()

    def close(self) -> None:
        if self.enabled and self.file is not None:
            self.writer.close()
            self.file.close()
            self._upload()
            self.file = None
            if self.trackers is not None:
                self.trackers.close()

    def _upload(self) -> None:
        self.folder.push(METRICS_LOG)
        self.folder.push(TENSORBOARD)


def read_metrics(location: str | os.PathLike) -> list[dict]:
    """The events of a run's metrics.jsonl (a local run folder or its URI), oldest first."""
    where = storage.join(str(location), METRICS_LOG)
    if not storage.exists(where):
        return []
    path = storage.local_copy(where)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
