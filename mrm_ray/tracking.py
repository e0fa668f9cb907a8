"""Experiment trackers: the numbers a run's MetricsLog writes to metrics.jsonl and TensorBoard, also sent to MLflow
and Weights & Biases when the run's `tracking:` asks (config/tracking.py), with the resolved config as the
tracked run's parameters and the exported model or report as its artifacts.

Trackers are made only where the run's metrics are written (rank 0 of a training job, the driver otherwise).
MLflow's run is opened through Ray's own integration (`ray.air.integrations.mlflow.setup_mlflow`), W&B's with
`wandb.init`: Ray's `setup_wandb` reads the rank
from the legacy session, which Ray Train V2 does not set (every worker would open a run), and asks for an API
key even in offline mode unless WANDB_MODE is set. The ids of the tracked runs are kept in the run folder
(`tracking.json`), so a later step (the driver logging the model its workers trained) adds to the same runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

IDS = "tracking.json"
_NOT_IN_MLFLOW_NAMES = re.compile(r"[^\w\-. :/]")


def mlflow_name(name: str) -> str:
    """A metric's name as MLflow takes it (alphanumerics, _ - . : / and spaces): `Acc+` is `Acc_plus`."""
    return _NOT_IN_MLFLOW_NAMES.sub(lambda m: "_plus" if m.group() == "+" else "_", name)


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys with string values (what MLflow's parameters take)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flat_params(value, f"{name}.")
        else:
            out[name] = json.dumps(value, default=str) if isinstance(value, (list, tuple, dict)) else str(value)
    return out


class Trackers:
    """The tracked runs of one job. `log(values, step)` sends numeric values; `artifact(path, kind)` a file or a
    folder; `close()` ends the runs. Runs the run folder's tracking.json names (an earlier step of the same job:
    the workers that trained the model the driver now logs, or a resumed job) are continued, not made anew."""

    def __init__(self, config, *, name: str, params: Mapping[str, Any] | None, folder) -> None:
        self.config, self.name, self.folder = config, name, folder
        if not (folder.local / IDS).is_file():
            folder.pull(IDS)  # a run in a bucket: its workers wrote it there
        ids = json.loads((folder.local / IDS).read_text()) if (folder.local / IDS).is_file() else {}
        self.mlflow = self.mlflow_run = self.wandb = None
        flat = flat_params(params or {})
        if config.mlflow is not None:
            self._start_mlflow(config.mlflow, flat, ids.get("mlflow_run_id"))
        if config.wandb is not None and config.wandb.mode != "disabled":
            self._start_wandb(config.wandb, params or {}, ids.get("wandb_run_id"))
        if (self.mlflow_run or self.wandb) and self.ids() != {k: ids.get(k) for k in self.ids()}:
            folder.write_json(IDS, self.ids())

    def _start_mlflow(self, cfg, params: dict[str, str], run_id: str | None) -> None:
        from mlflow.tracking import MlflowClient

        if run_id is None:
            from ray.air.integrations.mlflow import setup_mlflow

            mlflow = setup_mlflow(params, tracking_uri=cfg.tracking_uri, experiment_name=cfg.experiment,
                                  artifact_location=cfg.artifacts(), run_name=self.name,
                                  create_experiment_if_not_exists=True, rank_zero_only=False)
            run_id = mlflow.active_run().info.run_id
            mlflow.end_run()  # logged through the client by run id below: no process-wide active run
        self.mlflow, self.mlflow_run = MlflowClient(cfg.tracking_uri), run_id

    def _start_wandb(self, cfg, params: Mapping[str, Any], run_id: str | None) -> None:
        import wandb

        where = Path(cfg.dir).expanduser() if cfg.dir else (
            self.folder.local if not self.folder.remote else Path("~/mrm-ray-runs").expanduser())
        where.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(where), name=self.name,
                                config=dict(params), id=run_id, resume="allow" if run_id else None,
                                reinit="create_new", settings=wandb.Settings(silent=True, console="off"))

    def ids(self) -> dict:
        return {"mlflow_run_id": self.mlflow_run, "wandb_run_id": self.wandb.id if self.wandb else None}

    def log(self, values: Mapping[str, float], step: int) -> None:
        if not values:
            return
        if self.mlflow is not None:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(self.mlflow_run, metrics=[Metric(mlflow_name(k), float(v), now, step)
                                                            for k, v in values.items()])
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def artifact(self, path: str | Path, *, kind: str) -> None:
        """A file or folder (the exported model, the report) as the tracked runs' artifact of `kind`."""
        path = Path(path)
        if self.mlflow is not None:
            if path.is_dir():
                self.mlflow.log_artifacts(self.mlflow_run, str(path), artifact_path=kind)
            else:
                self.mlflow.log_artifact(self.mlflow_run, str(path), artifact_path=kind)
        if self.wandb is not None:
            import wandb

            art = wandb.Artifact(f"{self.name}-{kind}".replace("/", "-"), type=kind)
            art.add_dir(str(path)) if path.is_dir() else art.add_file(str(path))
            self.wandb.log_artifact(art)

    def close(self) -> None:
        if self.mlflow is not None:
            self.mlflow.set_terminated(self.mlflow_run)
            self.mlflow = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
