"""Training state, not log text: the Ray Train + DeepSpeed worker (driven in-process on the shared
cluster) is checked against one unbroken reference run of the tiny preset.

- a run stopped at step k and resumed, then losing a worker that is replaced, gives the
  reference's losses and final weights; each restored state's fingerprint equals the one saved
  with its checkpoint, and every step trained (before and after the kill) has the reference's loss;
- ZeRO-2 and ZeRO-3 give the same losses and weights under the same seed and data order, ZeRO-3 with
  micro-batches cut by a token budget instead of a pair count (ZeRO-0 trains, evaluates and exports in
  test_train_streaming.py);
- the reference's first losses are the ones pinned in pinned_losses.json;
- every trainable parameter moves (a frozen vision tower, the head's own learning rate, LoRA's
  unmoved base weights and merged export: tests/unit/train/test_model_setup.py, on the worker's
  own DeepSpeed engine in one process, without runs of their own here).

Losses are `metrics.jsonl`'s per-step values: the mean over both ranks of the Bradley-Terry
loss of the step's pairs. fp32 on CPU, same world size: a resumed or restarted run computes the
same numbers as the reference (1e-5 allows for nothing but float noise).
"""

import json
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from mrm_ray import storage
from mrm_ray.config import load_run_config
from mrm_ray.run_folder import read_metrics


pytestmark = pytest.mark.slow
PRESET = "tiny"
STEPS = 12  # 128 pairs, 20% held out: 6 steps an epoch, so the runs cross an epoch boundary
COMMON = ["synthetic.pairs=128", f"train.max_steps={STEPS}", "train.eval_every=4", "train.log_every=4",
          "train.keep_checkpoints=20"]
SAME = 1e-5  # same stage, same ranks: float noise only
# ZeRO stages reduce gradients in different orders (all-reduce, reduce-scatter, partitioned): over 12 Adam
# steps that moves the loss by ~1e-6 here; a wrong clipping, scaling or partition would move it by >1e-2
ACROSS_STAGES = 1e-4
# the Bradley-Terry loss sees only r_chosen - r_rejected, so the head's output bias gets a zero gradient
# and is the one trainable parameter that never moves
OUTPUT_BIAS = "head.mlp.3.bias"


def _config(out, name, *overrides):
    return load_run_config(PRESET, [f"output_dir={out}", f"name={name}", *COMMON, *overrides])


_DATA = {}  # the pairs, checked and encoded once for every run of this module (run_training's `data`)


def _train(out, name, *overrides):
    from mrm_ray.train.launch import prepare_data, resolve_model, run_training

    run = resolve_model(_config(out, name, *overrides))
    if "data" not in _DATA:
        _DATA["data"] = prepare_data(run)
    summary = run_training(run, data=_DATA["data"])
    return summary, read_metrics(storage.join(str(out), name))


def _losses(events) -> dict[int, list[float]]:
    """step -> the loss of every time it was trained (twice for steps redone after a kill)."""
    out: dict[int, list[float]] = {}
    for e in events:
        if e["event"] == "train":
            out.setdefault(e["step"], []).append(e["loss"])
    return out


def _fingerprints(events, kind) -> dict[int, dict]:
    """step -> the fingerprint of the first `kind` event at that step (a step redone after a restore
    saves again; the restore loaded the first)."""
    out: dict[int, dict] = {}
    for e in events:
        if e["event"] == kind:
            out.setdefault(e["step"], e["fingerprint"])
    return out


def _weights(summary_or_dir) -> dict[str, torch.Tensor]:
    from mrm_ray.train.export import consolidated_state_dict

    return consolidated_state_dict(summary_or_dir)


def _read(location: str) -> str:
    """A file's text, local or in object storage."""
    fs, path = storage.filesystem(location) if storage.is_uri(location) else (None, location)
    if fs is None:
        return Path(path).read_text()
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _last_checkpoint(out, name) -> Path:
    """The (local copy of the) checkpoint of the run's final step, found through Ray Train's storage."""
    import pyarrow.fs

    summary = json.loads(_read(storage.join(str(out), name, "summary.json")))
    results = storage.join(str(out), "ray_results", name)
    fs, root = storage.filesystem(results) if storage.is_uri(results) else (pyarrow.fs.LocalFileSystem(), results)
    states = [f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
              if f.path.endswith("/trainer_state.json")]
    final = [p.rpartition("/")[0] for p in states if json.loads(_read(p if fs.type_name == "local" else
                                                                      f"s3://{p}"))["step"] == summary["final_step"]]
    assert len(final) == 1, states
    return storage.local_copy(final[0] if fs.type_name == "local" else f"s3://{final[0]}")


def _assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("train-state")


@pytest.fixture(scope="module")
def reference(ray_cluster, out):
    """The unbroken ZeRO-2 run every other run is compared with."""
    summary, events = _train(out, "reference")
    losses = _losses(events)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(len(v) == 1 for v in losses.values())
    return {"summary": summary, "losses": {s: v[0] for s, v in losses.items()}, "events": events,
            "weights": _weights(_last_checkpoint(out, "reference"))}


def _train_worker_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []):
            pids.append(proc.info["pid"])
    return pids


def _registered_checkpoints(results: str) -> int:
    """Checkpoints Ray Train's controller has registered (a restart resumes from the latest of these)."""
    try:
        return len(json.loads(_read(storage.join(results, "checkpoint_manager_snapshot.json")))["checkpoint_results"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_a_worker_after_a_new_checkpoint(results: str, killed: list, stop: threading.Event) -> None:
    before = _registered_checkpoints(results)
    while not stop.is_set() and not killed:
        if _registered_checkpoints(results) > before:
            pids = _train_worker_pids()
            if pids:
                psutil.Process(pids[-1]).kill()
                killed.append(pids[-1])
                return
        time.sleep(0.02)


def test_stopped_then_killed_run_in_object_storage_resumes_to_the_unbroken_one(reference, s3):
    """Job 1 stops at step 5 (`train.stop_at_step`); job 2, the same run without the stop, resumes there,
    loses a worker (killed) after its first checkpoint, and the replacement restores that checkpoint.
    Every step trained in either job, redone ones included, has the reference's loss; the end, its weights.
    The run lives in a bucket (output_dir=s3://...): checkpoints, metrics and the exported model."""
    out = f"{s3.bucket()}/runs"
    first, events = _train(out, "resumed", "train.stop_at_step=5")
    assert first.stopped and first.checkpoint is None and first.final_step == 5
    assert _fingerprints(events, "checkpoint").keys() == {4, 5} and not _fingerprints(events, "restored")

    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_a_worker_after_a_new_checkpoint,
                               args=(storage.join(out, "ray_results", "resumed"), killed, stop), daemon=True)
    watcher.start()
    try:  # a checkpoint every 2 steps (evaluation changes no training state): time to kill mid-run
        second, events = _train(out, "resumed", "train.max_failures=2", "train.eval_every=2")
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert killed, "no worker was killed"
    assert not second.stopped and second.final_step == STEPS and second.checkpoint is not None
    saved = _fingerprints(events, "checkpoint")
    restored = [(e["step"], e["fingerprint"]) for e in events if e["event"] == "restored"]
    assert [step for step, _ in restored][:1] == [5] and len(restored) == 2 and restored[1][0] > 5, restored
    for step, fingerprint in restored:  # weights, fp32 masters, Adam moments and steps, summed over ranks
        assert fingerprint == pytest.approx(saved[step], rel=1e-9), step
    losses = _losses(events)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(len(losses[s]) == 1 for s in range(1, 6))  # job 1's steps were not trained again
    for step, values in losses.items():
        assert values == pytest.approx([reference["losses"][step]] * len(values), abs=SAME), step
    _assert_same_weights(_weights(_last_checkpoint(out, "resumed")), reference["weights"], atol=SAME)
    assert second.checkpoint == f"{out}/resumed/reward_model" and storage.exists(f"{out}/resumed/tensorboard")
    from mrm_ray.model.reward_model import RewardModel  # the export, read back from the bucket

    exported = RewardModel.from_pretrained(storage.local_copy(second.checkpoint))
    assert exported.provenance["training_checkpoint"].startswith(f"{out}/ray_results/resumed/checkpoint_")


def test_zero3_with_micro_batches_cut_by_tokens_gives_the_reference_losses(reference, out):
    """ZeRO-3 (parameters partitioned too) with each rank's 8 pairs of a step cut into micro-batches of at
    most 160 tokens (two or three, the same count on both ranks) instead of one of 8 pairs: the same loss,
    as the mean over the step's pairs, and the same updates. A wrong partition, a wrong share of the loss
    per micro-batch, or a boundary missed, would not be. (One run for both: each alone would pass only
    if it is right, and together they cost one run.)"""
    summary, events = _train(out, "zero3-by-tokens", "train.zero_stage=3", "train.max_tokens_per_micro_batch=160")
    assert summary.final_step == STEPS
    steps = [e for e in events if e["event"] == "train"]
    assert all(e["micro_batches"] >= 2 and e["tokens_per_micro_batch"] <= 160 for e in steps), steps[0]
    losses = {e["step"]: e["loss"] for e in steps}
    assert losses == pytest.approx(reference["losses"], abs=ACROSS_STAGES)
    _assert_same_weights(_weights(_last_checkpoint(out, "zero3-by-tokens")), reference["weights"], atol=1e-4)


PINNED = Path(__file__).with_name("pinned_losses.json")
PINNED_ATOL = 1e-4  # CPUs round differently (~1e-6 here); a change to the model, data or recipe moves them by >1e-2


def test_the_tiny_presets_first_losses_are_the_pinned_ones(reference):
    """The reference run's losses, step by step, are the ones stored in the repository: a change that moves
    them (the model, the tokenizer, the data, their order, the recipe) fails here and must say why when it
    updates pinned_losses.json (its `why`)."""
    pinned = json.loads(PINNED.read_text())
    assert pinned["preset"] == PRESET and pinned["overrides"] == COMMON
    got = {str(step): loss for step, loss in sorted(reference["losses"].items())}
    assert got == pytest.approx(pinned["losses"], abs=PINNED_ATOL), (
        "the tiny preset's losses moved; if that is intended, put these in tests/integration/pinned_losses.json "
        f"and say why there: {json.dumps(got)}")


def test_every_trainable_parameter_moved(reference, out):
    from mrm_ray.model.reward_model import RewardModel

    from mrm_ray.model import checkpoints

    base = RewardModel.from_pretrained(checkpoints.resolve("tiny", want=checkpoints.BACKBONE)).state_dict()
    trained = reference["weights"]
    assert trained.keys() == base.keys()
    unchanged = [n for n in base if torch.equal(trained[n], base[n].float())]
    assert unchanged == [OUTPUT_BIAS], unchanged  # vision tower, language model and head all train
