"""Driver side of a training run: data, the TorchTrainer, and the exported reward model.

    prepare_data(run)      mixture (or generated pairs) -> checked, mixed, split Ray Datasets
    build_trainer(run, d)  TorchTrainer(ScalingConfig, RunConfig(Checkpoint/FailureConfig))
    run_training(run)      fit, then export the best checkpoint as a reward checkpoint

`output_dir` may be a URI (s3://bucket/runs): Ray Train keeps checkpoints there itself (and
resumes from them), and the run's own files (its config, metrics, TensorBoard, quarantine, the
exported reward model, summary.json, logs) are written locally and uploaded (run_folder.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from mrm_ray.config import RunConfig, to_dict
from mrm_ray.model import checkpoints
from mrm_ray.references import is_tiny
from mrm_ray.run_folder import LOG_DIR, SUMMARY, RunFolder
from mrm_ray.storage import join

EXPORT_DIR = "reward_model"


@dataclass
class TrainingSummary:
    run_dir: str  # a local path or a URI
    checkpoint: str | None  # the exported reward checkpoint; None when the run stopped early to resume later
    held_out_accuracy: float
    step: int  # the exported (best) checkpoint's step
    final_step: int
    total_steps: int
    counts: dict

    @property
    def stopped(self) -> bool:
        return self.final_step < self.total_steps


def local_root(run: RunConfig) -> Path:
    """Where this driver keeps what it builds beside the runs (generated pairs): output_dir itself, or the
    local folder of a URI's."""
    return RunFolder(run.output_dir).local


def write_synthetic_source(out_dir: Path, *, pairs: int, task: str, seed: int, image_size: int) -> Path:
    """Generated image-grounded pairs as a chat-message JSONL with image files beside it."""
    from mrm_ray.atomic import atomic_dir
    from mrm_ray.data.synthetic import image_grounded_pairs

    target = out_dir / f"{task}-{pairs}-{seed}-{image_size}px"
    if (target / "pairs.jsonl").is_file():
        return target / "pairs.jsonl"
    with atomic_dir(target) as tmp:
        (tmp / "image").mkdir()
        lines = []
        for i, pair in enumerate(image_grounded_pairs(pairs, seed=seed, task=task, size=image_size)):
            content = [{"type": "text", "text": pair["prompt"]}]
            if pair["images"]:
                (tmp / "image" / f"{i}.png").write_bytes(pair["images"][0])
                content.insert(0, {"type": "image_url", "image_url": {"url": f"{i}.png"}})
            lines.append(json.dumps({"id": pair["id"], "chosen": pair["chosen"], "rejected": pair["rejected"],
                                     "prompt": [{"role": "user", "content": content}]}))
        (tmp / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return target / "pairs.jsonl"


def prepare_data(run: RunConfig):
    from mrm_ray.config import MixtureConfig, SourceConfig
    from mrm_ray.data.mixture import load_mixture
    from mrm_ray.data.pipeline import prepare_mixture

    folder = RunFolder(run.location)
    if run.mixture:
        mixture = load_mixture(run.mixture, paths=run.mixture_paths)
    else:
        s = run.synthetic
        path = write_synthetic_source(local_root(run) / "synthetic", pairs=s.pairs, task=s.task, seed=s.seed,
                                      image_size=s.image_size)
        mixture = MixtureConfig(name=f"synthetic-{s.task}", held_out_fraction=run.held_out_fraction, seed=s.seed,
                                sources=(SourceConfig(name=f"synthetic-{s.task}", reader="chat_messages",
                                                      path=str(path)),))
    try:
        processor = checkpoints.resolve(run.model.path, want=checkpoints.BACKBONE)
        return prepare_mixture(mixture, processor_path=str(processor),
                               data_config=run.data,
                               run_dir=folder.local, concurrency=run.preprocess_workers, num_cpus=run.preprocess_cpus)
    finally:
        folder.push("quarantine.jsonl")


def build_trainer(run: RunConfig, data):
    """The TorchTrainer for a run; the worker loop gets only plain data."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from mrm_ray.data.collate import steps_per_epoch
    from mrm_ray.model.processor import load_processor
    from mrm_ray.train.loop import train_loop_per_worker

    t = run.train
    n_train, n_held = data.n_train, data.n_held_out
    micro = steps_per_epoch(n_train, world_size=t.num_workers, batch_size=t.micro_batch_size)
    if micro < t.accumulation_steps:
        raise ValueError(f"{n_train} training pairs give {micro} micro-batches per worker per epoch, fewer than "
                         f"one optimizer step ({t.accumulation_steps}); lower train.global_batch_size")
    total_steps = t.max_steps or max(1, math.floor(micro * t.epochs / t.accumulation_steps))
    held_steps = steps_per_epoch(n_held, world_size=t.num_workers, batch_size=t.micro_batch_size)
    if held_steps == 0:
        raise ValueError(f"the held-out split has {n_held} pairs, fewer than one batch per worker; "
                         "raise held_out_fraction")
    resources = {"CPU": t.cpus_per_worker, **t.resources_per_worker}
    config = {
        "run": to_dict(run),
        "micro_steps_per_epoch": micro,
        "total_steps": total_steps,
        "held_out_steps": held_steps,
        "pad_token_id": load_processor(checkpoints.resolve(run.model.path, want=checkpoints.BACKBONE)
                                       ).tokenizer.pad_token_id,
        "sources": sorted(data.counts),
    }
    encoded = {split: data.encoded(split, cache=run.cache_encoded, concurrency=run.preprocess_workers,
                                   num_cpus=run.preprocess_cpus) for split in ("train", "held_out")}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                               resources_per_worker=resources),
        datasets=encoded,
        run_config=ray.train.RunConfig(
            name=run.name, storage_path=join(run.output_dir, "ray_results"),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=t.keep_checkpoints, checkpoint_score_attribute="held_out_accuracy",
                checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures)),
    )


def resolve_model(run: RunConfig) -> RunConfig:
    """A tiny `model.path` (references.py) -> the local tiny checkpoint it names, built once here, so that every
    worker reads the same files; any other reference each worker resolves itself (model/checkpoints.py)."""
    if not is_tiny(run.model.path):
        return run
    return replace(run, model=replace(run.model, path=str(checkpoints.resolve(run.model.path,
                                                                               want=checkpoints.BACKBONE))))


def run_training(run: RunConfig, *, data=None) -> TrainingSummary:
    """Fit; export the best checkpoint unless the run stopped early (`train.stop_at_step`) to resume later.

    `data`: what `prepare_data` made for a run with the same model and data settings, when one driver
    trains several times on the same pairs (a sweep); by default the run prepares its own.
    """
    from mrm_ray.logs import no_progress_bars
    from mrm_ray.train.export import export_checkpoint

    no_progress_bars()  # before the datasets are built: their executions everywhere inherit it
    folder = RunFolder(run.location)
    folder.route_logs("driver")
    run = resolve_model(run)
    folder.write_config(run)
    data = data if data is not None else prepare_data(run)
    trainer = build_trainer(run, data)
    result = trainer.fit()
    if result.error:
        raise result.error
    total_steps = trainer.train_loop_config["total_steps"]
    best, metrics = max(result.best_checkpoints, key=lambda cm: (cm[1]["held_out_accuracy"], cm[1]["step"]))
    metrics = {**metrics, "checkpoint_dir": _location(best)}
    final_step = int((result.metrics or {}).get("step", metrics["step"]))
    out = None
    if final_step >= total_steps:
        with best.as_directory() as checkpoint_dir:  # a local copy of a checkpoint in object storage
            export_checkpoint(checkpoint_dir, run=run, metrics=metrics, out_dir=folder.local / EXPORT_DIR,
                              counts=data.counts)
        out = folder.push(EXPORT_DIR, last=checkpoints.REWARD_CONFIG, replace=True)  # readers check REWARD_CONFIG
        if run.tracking.enabled and run.tracking.artifacts:  # to the runs rank 0 tracked (tracking.py)
            from mrm_ray.tracking import Trackers

            trackers = Trackers(run.tracking, name=run.name, params=None, folder=folder)
            trackers.artifact(folder.local / EXPORT_DIR, kind="model")
            trackers.close()
    summary = TrainingSummary(run_dir=folder.location, checkpoint=out, held_out_accuracy=metrics["held_out_accuracy"],
                              step=metrics["step"], final_step=final_step, total_steps=total_steps,
                              counts=data.counts)
    # The exported checkpoint is the best one, which may predate the last step (or a resume).
    folder.write_json(SUMMARY, {"checkpoint": out, "held_out_accuracy": summary.held_out_accuracy,
                                "step": summary.step, "final_step": final_step, "total_steps": total_steps,
                                "metrics": metrics, "counts": data.counts, "config": to_dict(run)})
    folder.push(LOG_DIR)
    return summary


def _location(checkpoint) -> str:
    """A Ray Train checkpoint's path, as a URI when it is in object storage."""
    kind = checkpoint.filesystem.type_name
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"
