"""Experiment trackers besides metrics.jsonl and TensorBoard: `tracking:` of a training run, a GRPO job and an
evaluation (mrm_ray/tracking.py logs to them).

    tracking:
      mlflow: {tracking_uri: sqlite:///runs/mlflow.db, experiment: reward-models}   # or http://mlflow:5000
      wandb: {project: reward-models, mode: offline}                                # offline: no network

Settings that cannot be honoured (the package is not installed, a local store that cannot be written) are
refused when the config is read, naming the setting, before Ray starts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

from mrm_ray.config.core import config_dataclass

_LOCAL_SCHEMES = ("sqlite:///", "file://")


def _installed(*packages: str, why: str = "") -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        names = ", ".join(f"`{p}`" for p in missing)
        raise ValueError(f"{why}the {names} package{'s are' if len(missing) > 1 else ' is'} not installed here: "
                         "pip install 'mrm-ray[tracking]', or remove this setting")


def _writable(folder: Path, what: str) -> None:
    """`folder` exists and is writable, or can be made (its nearest existing parent is writable)."""
    folder = folder.expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {folder} cannot be written (nearest existing folder: {probe})")


def local_store(uri: str) -> Path | None:
    """The folder a local MLflow store (sqlite:///PATH, file://PATH, or a plain path) keeps its data in."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).expanduser().parent
    if uri.startswith("file://"):
        return Path(uri[len("file://"):]).expanduser()
    if "://" not in uri:
        return Path(uri).expanduser()
    return None


@config_dataclass
class MLflowTracking:
    """An MLflow run per job: metrics, the resolved config as parameters, the exported model or report as
    artifacts. A local store works offline (`sqlite:///path/mlflow.db`; MLflow 3 keeps plain file stores behind
    MLFLOW_ALLOW_FILE_STORE=true); on a multi-node cluster use a tracking server (training logs from a worker)."""

    tracking_uri: str  # a server (http://...), or a local store: sqlite:///path/mlflow.db
    experiment: str = "mrm-ray"  # the MLflow experiment the run goes in (made when missing)
    artifact_location: str | None = None  # None: `artifacts/` beside a local store, else the server's default

    def __post_init__(self) -> None:
        _installed("mlflow")
        if self.tracking_uri.startswith("sqlite:"):
            _installed("sqlalchemy", "alembic", why="tracking_uri: a sqlite store needs ")
        store = local_store(self.tracking_uri)
        if store is not None:
            _writable(store, "tracking_uri")

    def artifacts(self) -> str | None:
        """Where a new experiment keeps its artifacts."""
        if self.artifact_location:
            return self.artifact_location
        store = local_store(self.tracking_uri)
        return (store / "artifacts").resolve().as_uri() if store is not None else None


@config_dataclass
class WandbTracking:
    """A Weights & Biases run per job; `mode: offline` writes it under `dir` without a network (`wandb sync` later)."""

    project: str  # the W&B project
    entity: str | None = None  # the W&B team or user; None = the default
    # offline: written locally, `wandb sync` later; disabled: nothing
    mode: Literal["online", "offline", "disabled"] = "online"
    dir: str | None = None  # where W&B writes its files; None: the run folder (a local one) or ~/mrm-ray-runs

    def __post_init__(self) -> None:
        _installed("wandb")
        if self.dir is not None:
            _writable(Path(self.dir), "dir")


@config_dataclass
class TrackingConfig:
    mlflow: MLflowTracking | None = None
    wandb: WandbTracking | None = None
    artifacts: bool = True  # the exported model (GRPO: the final policy and summary) or the report, as artifacts

    @property
    def enabled(self) -> bool:
        return self.mlflow is not None or (self.wandb is not None and self.wandb.mode != "disabled")

    def anchored(self) -> "TrackingConfig":
        """Relative local stores and folders made absolute (Ray workers and submitted jobs run elsewhere)."""
        import dataclasses

        mlflow, wandb = self.mlflow, self.wandb
        if mlflow is not None and mlflow.tracking_uri.startswith("sqlite:///"):
            db = Path(mlflow.tracking_uri[len("sqlite:///"):]).expanduser()
            mlflow = dataclasses.replace(mlflow, tracking_uri=f"sqlite:///{db.resolve()}")
        elif mlflow is not None and "://" not in mlflow.tracking_uri:
            mlflow = dataclasses.replace(mlflow, tracking_uri=Path(mlflow.tracking_uri).expanduser().resolve().as_uri())
        if wandb is not None and wandb.dir is not None:
            wandb = dataclasses.replace(wandb, dir=str(Path(wandb.dir).expanduser().resolve()))
        return dataclasses.replace(self, mlflow=mlflow, wandb=wandb)
