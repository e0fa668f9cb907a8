"""Reading back what a job logged to MLflow (its local store) and to W&B (an offline run's file), to compare with
the job's metrics.jsonl."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def tracking_overrides(root: Path, project: str = "mrm-tests") -> list[str]:
    """`tracking.*` settings: an MLflow sqlite store and W&B offline, both under `root`."""
    return [f"tracking.mlflow.tracking_uri=sqlite:///{root / 'mlflow' / 'mlflow.db'}",
            "tracking.mlflow.experiment=tests", f"tracking.wandb.project={project}", "tracking.wandb.mode=offline",
            f"tracking.wandb.dir={root / 'wandb'}"]


def tracking_config(root: Path):
    """The same settings as a TrackingConfig (for configs built in code), read by the one loader."""
    from mrm_ray.config import load_run_config

    return load_run_config("tiny", tracking_overrides(root)).tracking


def run_ids(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "tracking.json").read_text())


def mlflow_run(root: Path, run_id: str):
    """(client, run) of the store `tracking_overrides(root)` names."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    return client, client.get_run(run_id)


def mlflow_history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def mlflow_artifacts(client, run_id: str, path: str) -> list[str]:
    return sorted(Path(a.path).name for a in client.list_artifacts(run_id, path))


def wandb_records(root: Path, run_id: str) -> list:
    """The protobuf records of every offline run file of `run_id` under `root` (a resumed run writes another),
    read with the LevelDB log framing W&B writes them in (32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for path in sorted(root.glob(f"**/offline-run-*-{run_id}/run-{run_id}.wandb")):
        data, pos, block, buf = path.read_bytes(), 7, 32768, b""
        assert data[:4] == b":W&B", path
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0:
                break
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            buf = chunk if kind in (1, 2) else buf + chunk  # full / first, or middle / last
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(buf)
                out.append(record)
    return out


def wandb_history(records, key: str) -> dict[int, float]:
    """{step: value} of `key` in the history records."""
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            if key in items:
                out[int(items["_step"])] = float(items[key])
    return out


def wandb_config(records) -> dict:
    for r in records:
        if r.WhichOneof("record_type") == "run":
            return {i.key: json.loads(i.value_json) for i in r.run.config.update}
    return {}


def wandb_artifacts(records) -> list[tuple[str, str]]:
    return [(r.artifact.name, r.artifact.type) for r in records if r.WhichOneof("record_type") == "artifact"]
